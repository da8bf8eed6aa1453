"""Model specs that cannot work fail with a message that says what to do, before any work starts."""
from __future__ import annotations

import json

import pytest

from engine.model_sources import ModelSourceError, resolve_model


def test_missing_folder(tmp_path):
    with pytest.raises(ModelSourceError, match="no such model folder"):
        resolve_model(str(tmp_path / "nope"))


def test_file_is_not_a_model(tmp_path):
    f = tmp_path / "model.txt"
    f.write_text("x")
    with pytest.raises(ModelSourceError, match="must be a folder"):
        resolve_model(str(f))


def test_pickle_only_checkpoint_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "whisper"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(ModelSourceError, match="pickle"):
        resolve_model(str(tmp_path))


def test_not_a_whisper_model(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelSourceError, match="not a Whisper model"):
        resolve_model(str(tmp_path))


def test_hub_id_offline_and_not_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelSourceError, match="hub could not be reached|not in the local"):
        resolve_model("openai/whisper-small")


def test_cuda_request_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ModelSourceError, match="CUDA"):
        resolve_model(None, device="cuda")


def test_hf_folder_round_trip(tiny, tmp_path):
    """A saved transformers folder (safetensors) loads as a Hugging Face model spec."""
    import shutil

    dst = tmp_path / "hf-tiny"
    shutil.copytree(tiny.folder, dst)
    (dst / "import_source.json").unlink()
    loaded = resolve_model(str(dst))
    assert loaded.info.extra["kind"] == "huggingface"
    assert loaded.settings == tiny.settings


def test_cudnn_attention_is_switched_off_for_cuda_models():
    """The switch resolve_model flips for CUDA models (measured 3.5x slower decode steps with cuDNN's SDPA)."""
    import torch

    from engine.model_sources import avoid_cudnn_attention

    before = torch.backends.cuda.cudnn_sdp_enabled()
    try:
        torch.backends.cuda.enable_cudnn_sdp(True)
        avoid_cudnn_attention()
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.mem_efficient_sdp_enabled()
    finally:
        torch.backends.cuda.enable_cudnn_sdp(before)


def test_loads_without_the_kernels_package(monkeypatch):
    """The bundle leaves out `kernels` (hub kernels, which transformers >= 5.25 turns on by default):
    a load must not ask for it (issue 27: the frozen CLI died with "Kernels are not available")."""
    import transformers.modeling_utils as mu

    monkeypatch.setattr(mu, "is_kernels_available", lambda *a, **k: False)
    loaded = resolve_model(None, device="cpu")
    assert not getattr(loaded.model, "use_kernels", False)
