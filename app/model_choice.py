"""What model the user asked for: a plain, picklable record shared by the GUI and the worker.

It says *which* model and *how* to run it; the worker turns it into a loaded model through
`engine.model_sources.resolve_model` (and `engine.mla` for an MLA conversion).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path, PurePath
from typing import Any

BUNDLED_MODELS = ("tiny.en", "base")  # mirrors engine.model_sources.BUNDLED without importing torch here
DEFAULT_MODEL = "tiny.en"
KV_MODES = ("compressed", "exact", "stock", "mla")  # engine.mla.exact_latent.apply_cache_mode; compressed: the default
LOAD_TIME_MODES = ("compressed", "exact")  # made from the loaded weights in milliseconds, no conversion
KV_PRESETS = (0.75, 0.875)  # KV reduction 1 - r/2d: r = d/2 and r = d/4
DEVICES = ("auto", "cpu", "cuda")
TASKS = ("transcribe", "translate")  # translate: into English (multilingual models only)
ENGLISH_ONLY_VOCAB = 51864  # the vocabulary of Whisper's .en models; multilingual ones have 51865 or more
DEFAULT_BEAM = 5  # mirrors engine.transcribe.DEFAULT_BEAM (beam search: why, there) without importing torch


@dataclass(frozen=True)
class ModelChoice:
    source: str = DEFAULT_MODEL  # bundled name, model folder or hub id
    kv_mode: str = "compressed"  # "compressed" (8-bit latent, the default), "exact", "stock" or "mla" (converted)
    kv_reduction: float | None = 0.75  # used when kv_mode == "mla" and rank is None
    rank: int | None = None  # custom latent rank (overrides kv_reduction)
    exact_cross: bool = False  # cache-free exact cross-attention (MLA mode only)
    device: str = "auto"
    beam_size: int = DEFAULT_BEAM
    language: str | None = None  # None: English for .en models, detected otherwise
    task: str = "transcribe"  # or "translate" (to English); English-only models always transcribe
    word_timestamps: bool = True  # words timed from cross-attention: about 5-8% of a CPU run (docs/measurements/word-timestamps-2026-12-07)

    @property
    def is_mla(self) -> bool:
        return self.kv_mode == "mla"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "ModelChoice":
        """Tolerant of missing/unknown keys and wrong types (old settings files)."""
        base = cls()
        if not isinstance(d, dict):
            return base
        names = {f.name for f in fields(cls)}
        clean = {k: v for k, v in d.items() if k in names}
        try:
            choice = replace(base, **clean)
        except TypeError:
            return base
        if choice.kv_mode not in KV_MODES or choice.device not in DEVICES or choice.task not in TASKS:
            return base
        try:
            beam = max(1, min(16, int(choice.beam_size)))
            rank = None if choice.rank in (None, "", 0) else int(choice.rank)
            red = None if choice.kv_reduction in (None, "") else float(choice.kv_reduction)
        except (TypeError, ValueError):
            return base
        return replace(choice, source=str(choice.source or DEFAULT_MODEL), beam_size=beam, rank=rank,
                       kv_reduction=red, exact_cross=bool(choice.exact_cross), language=choice.language or None,
                       word_timestamps=bool(choice.word_timestamps))

    @property
    def english_only(self) -> bool:
        """Whether the model knows only English (tiny.en, a folder of one): it can neither translate nor detect."""
        return is_english_only(self.source)

    @property
    def effective_task(self) -> str:
        """The task the worker will run: an English-only model transcribes whatever was asked."""
        return "transcribe" if self.english_only else self.task

    def model_key(self) -> str:
        """Everything that decides the loaded weights (not beam size or language): the worker's cache key."""
        d = {"source": self.source, "device": self.device, "kv_mode": self.kv_mode}
        if self.is_mla:
            d.update(kv_reduction=None if self.rank else self.kv_reduction, rank=self.rank,
                     exact_cross=self.exact_cross)
        return json.dumps(d, sort_keys=True)

    def conversion_name(self) -> str:
        """Folder name for the MLA conversion of this choice, stable across runs."""
        digest = hashlib.sha256(self.model_key().encode()).hexdigest()[:10]
        short = "".join(c if c.isalnum() or c in "._-" else "_" for c in self.source.rstrip("/\\").split("/")[-1])
        return f"{short}-mla-{self.kv_text().replace('%', 'pct').replace(' ', '')}-{digest}"

    def kv_text(self) -> str:
        """'compressed (8-bit)', 'compressed (exact)', 'stock', 'MLA 87.5%', 'MLA r=64' (+ exact cross)."""
        if not self.is_mla:
            if is_mla_folder(self.source):
                return "MLA (folder)"
            return {"compressed": "compressed (8-bit)", "exact": "compressed (exact)"}.get(self.kv_mode, "stock")
        core = f"MLA r={self.rank}" if self.rank else f"MLA {100 * (self.kv_reduction or 0):g}%"
        return core + (" + exact cross" if self.exact_cross else "")

    def source_text(self) -> str:
        """Short model name: the bundled name or hub id as is, a folder by its last part."""
        if self.source in BUNDLED_MODELS or _is_hub_id(self.source):
            return self.source
        return PurePath(self.source.replace("\\", "/")).name or self.source

    @property
    def kv_cache(self) -> str:
        """What `engine.model_sources.resolve_model(kv_cache=...)` is asked for this choice's source."""
        return self.kv_mode if self.kv_mode in LOAD_TIME_MODES else "stock"

    def label(self) -> str:
        return f"{self.source_text()} · {self.kv_text()}"


def is_english_only(spec: str) -> bool:
    """A '.en' name (bundled or hub), or a model folder whose config has the English-only vocabulary."""
    if spec.rstrip("/\\").endswith(".en"):
        return True
    try:
        config = Path(spec).expanduser() / "config.json"
        if config.is_file():
            vocab = json.loads(config.read_text(encoding="utf-8")).get("vocab_size")
            return isinstance(vocab, int) and vocab == ENGLISH_ONLY_VOCAB
    except (OSError, ValueError, AttributeError):
        pass
    return False


def is_mla_folder(spec: str) -> bool:
    """A folder written by engine.mla.save_mla_model (its marker file; no torch import here)."""
    try:
        p = Path(spec).expanduser()
        return p.is_dir() and (p / "mla_config.json").is_file()
    except OSError:
        return False


def _is_hub_id(s: str) -> bool:
    return s.count("/") == 1 and not s.startswith((".", "/", "~")) and "\\" not in s
