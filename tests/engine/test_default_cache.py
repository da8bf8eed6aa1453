"""The load-time exact cache (issue 21): made at load time, stock's tokens; the default adds 8 bits on top.

The 8-bit default itself is tested in test_latent_int8.py.
"""
from __future__ import annotations

import json

import pytest
import torch

from engine.mla.exact_latent import ExactLatentAttention, compress_exact
from engine.mla.cross import ExactCrossAttention
from engine.model_sources import ModelSourceError, resolve_model
from engine.transcribe import TranscribeOptions, Transcriber
from tests.engine.test_cli import run_cli

CLIPS = ("1089-134686-0000", "2033-164914-0001", "3080-5032-0003")


@pytest.fixture(scope="module")
def compressed():
    """The exact mode: the default's structure without the 8-bit rounding."""
    return resolve_model(None, device="cpu", kv_cache="exact")


def test_compressed_mode_replaces_every_decoder_attention(compressed):
    layers = compressed.model.model.decoder.layers
    assert all(isinstance(l.self_attn, ExactLatentAttention) for l in layers)
    assert all(isinstance(l.encoder_attn, ExactCrossAttention) for l in layers)
    assert not any(isinstance(l.self_attn, ExactLatentAttention) for l in compressed.model.model.encoder.layers)
    assert compressed.info.kv_mode == "compressed (exact): mla decoder-self r=384 (50.0%) + exact cross"


@pytest.mark.parametrize("beam", [1, 5])
def test_same_tokens_as_stock_on_real_clips(tiny, compressed, data_dir, beam):
    for clip in CLIPS:
        audio = data_dir / f"{clip}.flac"
        a = Transcriber(tiny, TranscribeOptions(beam_size=beam)).transcribe(audio)
        b = Transcriber(compressed, TranscribeOptions(beam_size=beam)).transcribe(audio)
        assert [s.tokens for s in b.segments] == [s.tokens for s in a.segments], (clip, beam)
        assert b.stats.kv_cache_peak.cross_attn == 0
        assert 2 * b.stats.kv_cache_peak.self_attn == a.stats.kv_cache_peak.self_attn  # exactly half


def test_reported_bytes_are_the_tensors_held(compressed):
    """After T tokens in b rows the cache holds (b, 1, T, d) per layer and nothing else: that is what is reported."""
    from engine.kv_cache import cache_bytes, new_cache

    model, b, t = compressed.model, 3, 7
    d, n_layers = model.config.d_model, model.config.decoder_layers
    enc = torch.randn(1, 1500, d)  # one window shared by the b rows (exact cross-attention takes it unrepeated)
    cache = new_cache()
    with torch.inference_mode():
        model.model.decoder(input_ids=torch.randint(0, 50000, (b, t)), encoder_hidden_states=enc,
                            cache=cache, use_cache=True)
    held = cache_bytes(cache)
    assert held.cross_attn == 0
    assert held.self_attn == n_layers * b * t * d * 4
    assert held.self_attn == sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.self_attention_cache.layers)


def test_compress_exact_refuses_a_converted_model(compressed):
    with pytest.raises(ValueError, match="already converted"):
        compress_exact(compressed.model)


def test_unknown_kv_cache_mode_fails_before_loading():
    with pytest.raises(ModelSourceError, match="choose compressed, exact, stock"):
        resolve_model(None, kv_cache="tiny")  # the message names every mode


def test_naive_and_absorbed_paths_agree(compressed):
    """Training and teacher forcing take the naive path, decoding the absorbed one: same attention."""
    layer = compressed.model.model.decoder.layers[0].self_attn
    x = torch.randn(2, 5, layer.embed_dim)
    try:
        with torch.inference_mode():
            layer.path = "naive"
            ref = layer(x)[0]
            layer.path = "absorbed"
            out = layer(x)[0]
    finally:
        layer.path = "auto"
    assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4)


def test_cli_runs_the_compressed_mode_unless_another_is_asked(tiny, sample_path, tmp_path):
    expected = {"compressed": "compressed (8-bit latent)", "exact": "compressed (exact)", "stock": "stock"}
    peaks = {}
    for mode, args in (("compressed", ()), ("exact", ("--kv-cache", "exact")), ("stock", ("--kv-cache", "stock"))):
        out = run_cli("transcribe", str(sample_path), "--format", "json", "--out", mode, "-q", *args, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert "Loading weights" not in out.stderr  # no third-party progress bars (issue 18, item 8)
        data = json.loads((tmp_path / mode / "jfk_inaugural_excerpt.json").read_text())
        assert data["model"]["kv_mode"].startswith(expected[mode])
        peaks[mode] = data["stats"]["kv_cache_peak_bytes"]
        assert (peaks[mode]["cross"] == 0) == (mode != "stock")
        assert "ask not what your country can do for you" in data["text"].lower()
    assert 2 * peaks["exact"]["self"] == peaks["stock"]["self"]
    assert 3 * peaks["compressed"]["self"] < peaks["exact"]["self"]  # int8 codes + fp16 scales against fp32
