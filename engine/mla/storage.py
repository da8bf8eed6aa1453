"""A converted model on disk: one self-contained folder, safetensors and JSON only (never pickle).

    model.safetensors          all weights (the tied output projection is stored once)
    config.json                the transformers WhisperConfig
    generation_config.json     the generation config (when the model has one)
    mla_config.json            what was converted, ranks per layer, init, calibration audio, date
    tokenizer files, preprocessor_config.json   so the folder loads without its source model
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch

from engine.atomic import check_replaceable_dir, replace_dir, temp_dir_beside
from engine.mla.config import MLAConfig

log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
MLA_CONFIG = "mla_config.json"
TIED = "proj_out.weight"  # tied to model.decoder.embed_tokens.weight in Whisper
MODEL_FOLDER = "Whisper-MLA model folder"


def is_mla_dir(path: str | Path) -> bool:
    """True for a folder written by `save_mla_model`."""
    p = Path(path)
    return (p / MLA_CONFIG).is_file() and (p / WEIGHTS).is_file() and (p / "config.json").is_file()


def check_model_out(path: str | Path) -> None:
    """Refuse (OutputDirError) an output folder that is neither new, empty nor a Whisper-MLA model folder."""
    check_replaceable_dir(Path(path), is_mla_dir, MODEL_FOLDER)


def _state_for_saving(model, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        if name == TIED and t.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr():
            continue
        t = t.detach().to("cpu")
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        out[name] = t.contiguous()
    return out


def _make_readable(folder: Path) -> None:
    """mkdtemp makes 0700 folders: give the result the user's normal permissions."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for f in folder.iterdir():
        os.chmod(f, 0o666 & ~umask)


def save_mla_model(model, mla_config: MLAConfig, out_dir: str | Path, *, tokenizer=None,
                   feature_extractor=None, extra_files_from: str | Path | None = None,
                   dtype: torch.dtype | None = None) -> Path:
    """Write the folder atomically (temp folder, then rename); returns its path.

    `extra_files_from`: a model folder whose tokenizer / preprocessor files are copied when
    no tokenizer / feature extractor object is given. `dtype`: store the weights in this
    type (e.g. float16 to halve the folder); default as they are.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    check_model_out(out)
    tmp = temp_dir_beside(out)
    try:
        save_file(_state_for_saving(model, dtype), str(tmp / WEIGHTS), metadata={"format": "pt", "whisper_mla": "1"})
        model.config.save_pretrained(tmp)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(tmp)
        (tmp / MLA_CONFIG).write_text(mla_config.to_json() + "\n", encoding="utf-8")
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if feature_extractor is not None:
            feature_extractor.save_pretrained(tmp)
        if extra_files_from is not None:
            _copy_support_files(Path(extra_files_from), tmp)
        _make_readable(tmp)
        replace_dir(tmp, out, is_mla_dir, MODEL_FOLDER)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("saved MLA model to %s", out)
    return out


_SUPPORT = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
            "vocab.json", "merges.txt", "normalizer.json", "preprocessor_config.json", "generation_config.json")


def _copy_support_files(src: Path, dst: Path) -> None:
    for name in _SUPPORT:
        if (src / name).is_file() and not (dst / name).exists():
            shutil.copy2(src / name, dst / name)


def load_mla_config(path: str | Path) -> MLAConfig:
    return MLAConfig.from_dict(json.loads((Path(path) / MLA_CONFIG).read_text(encoding="utf-8")))


def load_mla_model(path: str | Path, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32):
    """(WhisperForConditionalGeneration with MLA modules, eval mode, MLAConfig) from a folder.

    Weights are read with safetensors only; the module layout is rebuilt from mla_config.json.
    """
    from safetensors.torch import load_file
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    from engine.mla.convert import apply_structure

    folder = Path(path)
    if not is_mla_dir(folder):
        raise FileNotFoundError(f"{folder}: not a Whisper-MLA folder (needs {MLA_CONFIG}, {WEIGHTS}, config.json)")
    cfg = load_mla_config(folder)
    config = WhisperConfig.from_pretrained(folder, local_files_only=True)
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
        apply_structure(model, cfg)
    state = load_file(str(folder / WEIGHTS))
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [m for m in missing if m != TIED]
    if missing or unexpected:
        raise ValueError(f"{folder}: weights do not match mla_config.json: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    model.proj_out.weight = model.model.decoder.embed_tokens.weight
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise ValueError(f"{folder}: tensors without values after loading: {left[:5]}")
    if (folder / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(folder, local_files_only=True)
    model.to(device=device, dtype=dtype)
    model.eval()
    model.mla_config = cfg
    return model, cfg
