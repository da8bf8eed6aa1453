"""The default cache mode: the decoder's latent held in 8 bits (issue 21, item 2)."""
from __future__ import annotations

import pytest
import torch

from engine.kv_cache import cache_bytes, new_cache
from engine.mla.attention import MLAAttention
from engine.mla.latent_int8 import GROUP, Int8LatentCodec, group_for, quantize_latent_caches, rotation
from engine.model_sources import resolve_model
from engine.transcribe import TranscribeOptions, Transcriber
from engine.wer import word_error_rate

CLIPS = ("1089-134686-0000", "2033-164914-0001", "3080-5032-0003")


@pytest.fixture(scope="module")
def default_mode():
    return resolve_model(None, device="cpu", kv_cache="compressed")


@pytest.mark.parametrize("n", [384, 512, 768, 1024, 1280, 192, 96, 160, 100])
def test_rotation_is_orthonormal_for_whisper_sizes(n):
    r = rotation(n)
    assert torch.allclose(r @ r.T, torch.eye(n, dtype=torch.float64), atol=1e-12)
    assert torch.equal(rotation(n), r)  # the same matrix every time
    # dense: one channel's outlier lands on every channel, none keeps more than a small share of it
    assert float(r.pow(2).amax()) < 40 / n


def test_round_trip_error_is_within_half_a_step_per_channel():
    codec = Int8LatentCodec.for_rank(384, torch.float32, "cpu")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 11, 384, generator=gen)
    x[..., 7] *= 50  # an outlier channel, as Whisper's layer-normed inputs have
    codes, scales = codec.encode(x)
    assert codes.dtype == torch.int8 and scales.dtype == torch.float16 and scales.shape == (3, 11, 384 // GROUP)
    rotated = x @ codec.rotation
    back = codec.decode(codes, scales, torch.float32)
    step = scales.float().repeat_interleave(GROUP, dim=-1)
    assert ((back - rotated).abs() <= step / 2 + 1e-6).all()
    assert torch.allclose(codec.unrotate(back), x, atol=float(step.max()))
    # the rotation is what makes 8 bits enough: without it the outlier sets every scale of its token
    plain = x.unflatten(-1, (-1, 384)).abs().amax(-1) / 127
    assert float(step.mean()) < float(plain.mean()) / 3


def test_silent_rows_encode_to_zero_not_nan():
    codec = Int8LatentCodec.for_rank(96, torch.float32, "cpu")
    codes, scales = codec.encode(torch.zeros(2, 3, 96))
    assert (codes == 0).all() and (scales > 0).all()
    assert torch.equal(codec.decode(codes, scales, torch.float32), torch.zeros(2, 3, 96))


def test_group_divides_every_rank():
    for rank in (384, 192, 96, 160, 48, 100, 7):
        g = group_for(rank)
        assert rank % g == 0 and g <= GROUP


def test_reported_bytes_are_the_codes_and_scales_held(default_mode):
    """After T tokens in b rows each layer holds (b, 1, T, d) int8 + (b, 1, T, d/64) fp16: that is what is reported."""
    model, b, t = default_mode.model, 3, 7
    d, n_layers = model.config.d_model, model.config.decoder_layers
    cache = new_cache()
    with torch.inference_mode():
        model.model.decoder(input_ids=torch.randint(0, 50000, (b, t)), encoder_hidden_states=torch.randn(1, 1500, d),
                            cache=cache, use_cache=True)
    held = cache_bytes(cache)
    layers = cache.self_attention_cache.layers
    assert all(layer.keys.dtype == torch.int8 and layer.values.dtype == torch.float16 for layer in layers)
    assert held.cross_attn == 0
    assert held.self_attn == n_layers * b * t * (d + 2 * d // GROUP)
    assert held.self_attn == sum(layer.keys.nbytes + layer.values.nbytes for layer in layers)


def test_naive_and_absorbed_paths_read_the_8bit_cache_alike(default_mode):
    """The absorbed path reads the rotated codes with rotated weights, the naive one un-rotates: same attention."""
    layer = default_mode.model.model.decoder.layers[1].self_attn
    assert layer.latent_codec is not None
    x = torch.randn(2, 6, layer.embed_dim)
    outs = {}
    try:
        for path in ("naive", "absorbed"):
            layer.path = path
            cache = new_cache()
            with torch.inference_mode():
                layer(x[:, :5], cache=cache)  # the prompt goes into the cache ...
                outs[path] = layer(x[:, 5:], cache=cache)[0]  # ... and a step attends over it
    finally:
        layer.path = "auto"
    assert torch.allclose(outs["naive"], outs["absorbed"], atol=1e-4, rtol=1e-4)


def test_8bit_attention_stays_close_to_the_unrounded_latent(default_mode):
    layer = default_mode.model.model.decoder.layers[0].self_attn
    x = torch.randn(1, 12, layer.embed_dim)
    codec, outs = layer.latent_codec, {}
    try:
        for name, c in (("int8", codec), ("exact", None)):
            layer.latent_codec = c
            with torch.inference_mode():
                outs[name] = layer(x, cache=new_cache())[0]
    finally:
        layer.latent_codec = codec
    rel = (outs["int8"] - outs["exact"]).norm() / outs["exact"].norm()
    assert 0 < float(rel) < 0.02


@pytest.mark.parametrize("beam", [1, 5])
def test_default_mode_transcribes_real_clips_as_stock_does(tiny, default_mode, data_dir, beam):
    """The noise-floor test itself runs on the dev sets in bench/bench_default_mode.py; here: no drift on 3 clips."""
    stock_texts, texts = [], []
    for clip in CLIPS:
        audio = data_dir / f"{clip}.flac"
        stock_texts.append(Transcriber(tiny, TranscribeOptions(beam_size=beam)).transcribe(audio).text)
        tr = Transcriber(default_mode, TranscribeOptions(beam_size=beam)).transcribe(audio)
        texts.append(tr.text)
        assert tr.stats.kv_cache_peak.cross_attn == 0
    assert word_error_rate(stock_texts, texts).wer <= 0.05


def test_a_converted_rank_is_held_in_8_bits_too(tiny):
    """A Whisper-MLA conversion (rank 96, 87.5%) under the default mode: rank-96 codes in groups of 48."""
    import copy

    from engine.mla import convert_model

    model = copy.deepcopy(tiny.model)
    convert_model(model, rank=96, init="svd")
    assert quantize_latent_caches(model) == model.config.decoder_layers
    attn = model.model.decoder.layers[0].self_attn
    assert isinstance(attn, MLAAttention) and attn.latent_codec.group == 48
    cache = new_cache()
    with torch.inference_mode():
        model.model.decoder(input_ids=torch.randint(0, 50000, (2, 4)), encoder_hidden_states=torch.randn(2, 1500, 384),
                            cache=cache, use_cache=True)
    assert cache_bytes(cache).self_attn == model.config.decoder_layers * 2 * 4 * (96 + 2 * 2)


def test_layers_of_one_rank_share_one_codec(default_mode):
    """One rotation per rank, not per layer (large-v3: 32 copies of a 1280 x 1280 matrix and 32 QRs at load)."""
    codecs = {id(layer.self_attn.latent_codec) for layer in default_mode.model.model.decoder.layers}
    assert len(codecs) == 1
    assert default_mode.info.kv_mode.startswith("compressed (8-bit latent): mla decoder-self r=384 int8 (87.1% less")
