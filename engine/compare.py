"""Stock Whisper vs Whisper-MLA on the same audio: memory timelines, peaks, speed, transcript diff.

The app's comparison view and `whisper-mla compare` both call `run_comparison`. The report's
`to_dict()` is the JSON the CLI writes; its keys are stable (see `ComparisonReport`).

Measurement conditions: both runs happen one after the other in the *same process* (stock
first, then MLA), not in fresh processes, so the app can show them live and reuse what is
loaded. Before each run: `gc.collect()`, and on CUDA `synchronize`, `empty_cache` and
`reset_peak_memory_stats`, so device peaks are per run; the process RSS right before each
run is kept as `rss_baseline_bytes`. RSS is a process-wide high-water mark in practice (the
allocator keeps freed pages), so the MLA run's absolute RSS includes whatever the stock run
left behind: compare `peak_rss_bytes - rss_baseline_bytes`, or the exact KV-cache bytes,
which do not have that problem. On a GPU, `peak_device_bytes` (torch's per-run peak) is
the fair number.
"""
from __future__ import annotations

import copy
import gc
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from engine.audio import probe
from engine.memory.probes import MemorySample, rss_bytes
from engine.memory.sampler import MemorySampler
from engine.mla.config import MLAConfig
from engine.model_sources import LoadedModel, resolve_model
from engine.results import ModelInfo, Progress, RunStats, Segment
from engine.transcribe import CancelToken, Transcriber, TranscribeOptions
from engine.wer import normalize, word_error_rate

log = logging.getLogger(__name__)

LABELS = ("stock", "mla")
CONDITIONS = ("same process, one run after the other (stock first); gc.collect() before each run, and on CUDA "
              "empty_cache() + reset_peak_memory_stats(); RSS baseline recorded before each run")


@dataclass
class RunReport:
    """One side of the comparison."""

    label: str  # "stock" or "mla"
    model: ModelInfo
    text: str
    stats: RunStats
    rss_baseline_bytes: int | None
    timeline: list[MemorySample]
    beam_size: int = 1
    batch_size: int = 1
    complete: bool = True

    @property
    def peak_rss_bytes(self) -> int:
        return max([self.stats.peak_rss_bytes] + [s.rss_bytes for s in self.timeline])

    @property
    def peak_device_bytes(self) -> int | None:
        if self.stats.peak_device_bytes is not None:
            return self.stats.peak_device_bytes
        peaks = [s.torch_peak_bytes for s in self.timeline if s.torch_peak_bytes is not None]
        return max(peaks) if peaks else None

    def to_dict(self) -> dict[str, Any]:
        d = self.stats.to_dict()
        d["peak_rss_bytes"] = self.peak_rss_bytes
        d["peak_device_bytes"] = self.peak_device_bytes
        d.update(rss_baseline_bytes=self.rss_baseline_bytes, beam_size=self.beam_size, batch_size=self.batch_size,
                 complete=self.complete, text=self.text, model=self.model.to_dict(),
                 timeline=[s.to_dict() for s in self.timeline])
        return d


@dataclass(frozen=True)
class KVSaving:
    """How much smaller the MLA KV cache peak is: percentages (None if stock held nothing) and bytes saved."""

    self_pct: float | None
    total_pct: float | None
    self_bytes: int
    total_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"self_pct": self.self_pct, "total_pct": self.total_pct,
                "self_bytes": self.self_bytes, "total_bytes": self.total_bytes}


@dataclass(frozen=True)
class WordOp:
    """One chunk of the stock -> MLA word alignment (normalised words)."""

    op: str  # "equal" | "substitute" | "insert" | "delete"
    stock: tuple[str, ...]
    mla: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "stock": list(self.stock), "mla": list(self.mla)}


@dataclass
class ComparisonReport:
    """`to_dict()` keys: file, duration, conditions, complete, stock, mla, wer_mla_vs_stock,
    wer_stock_vs_reference, wer_mla_vs_reference, kv_saving, word_diff."""

    file: str
    duration: float
    stock: RunReport
    mla: RunReport | None  # None when cancelled before the MLA run
    wer_mla_vs_stock: float | None = None
    wer_stock_vs_reference: float | None = None
    wer_mla_vs_reference: float | None = None
    kv_saving: KVSaving | None = None
    word_diff: list[WordOp] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.stock.complete and self.mla is not None and self.mla.complete

    def to_dict(self) -> dict[str, Any]:
        r = lambda x: None if x is None else round(x, 4)  # noqa: E731
        return {
            "file": self.file, "duration": round(self.duration, 3), "conditions": CONDITIONS,
            "complete": self.complete, "stock": self.stock.to_dict(),
            "mla": self.mla.to_dict() if self.mla else None,
            "wer_mla_vs_stock": r(self.wer_mla_vs_stock), "wer_stock_vs_reference": r(self.wer_stock_vs_reference),
            "wer_mla_vs_reference": r(self.wer_mla_vs_reference),
            "kv_saving": self.kv_saving.to_dict() if self.kv_saving else None,
            "word_diff": [w.to_dict() for w in self.word_diff],
            "mla_parts": self.mla_parts(),
        }

    def mla_parts(self) -> list[str]:
        """Which parts of the MLA side are exact and which approximate (empty for a stock model)."""
        extra = self.mla.model.extra if self.mla else {}
        cfg = extra.get("mla")
        return MLAConfig.from_dict(cfg).exactness(bool(extra.get("latent_int8"))) if isinstance(cfg, dict) else []


# -- pieces ---------------------------------------------------------------------------------
def kv_saving(stock: RunStats, mla: RunStats) -> KVSaving:
    s, m = stock.kv_cache_peak, mla.kv_cache_peak

    def pct(a: int, b: int) -> float | None:
        return round(100.0 * (1.0 - b / a), 2) if a > 0 else None

    return KVSaving(pct(s.self_attn, m.self_attn), pct(s.total, m.total), s.self_attn - m.self_attn, s.total - m.total)


def word_diff(stock_text: str, mla_text: str) -> list[WordOp]:
    """Alignment of the normalised words (the same normalisation as the WER)."""
    a, b = normalize(stock_text).split(), normalize(mla_text).split()
    if not a or not b:
        return ([WordOp("delete", tuple(a), ())] if a else []) + ([WordOp("insert", (), tuple(b))] if b else [])
    import jiwer

    out = jiwer.process_words(" ".join(a), " ".join(b))
    return [WordOp(c.type, tuple(a[c.ref_start_idx:c.ref_end_idx]), tuple(b[c.hyp_start_idx:c.hyp_end_idx]))
            for c in out.alignments[0]]


def clean_conditions(device: torch.device) -> int | None:
    """Collect garbage and reset CUDA peak statistics; returns the RSS baseline."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    return rss_bytes()


def convert_in_process(stock: LoadedModel, kv_reduction: float, *, copy_model: bool = True,
                       **convert_kwargs: Any) -> LoadedModel:
    """An MLA LoadedModel made from `stock` with `engine.mla.convert_model` (calibrated, its default audio)."""
    from engine.mla import convert_model

    model = copy.deepcopy(stock.model) if copy_model else stock.model
    convert_kwargs.setdefault("rank_allocation", "auto")
    cfg = convert_model(model, kv_reduction=kv_reduction, source=stock.info.source, **convert_kwargs)
    d = model.config.d_model
    info = ModelInfo(source=stock.info.source, name=f"{stock.info.name} (MLA)", multilingual=stock.info.multilingual,
                     kv_mode=cfg.describe(d), extra={"kind": "mla-converted-in-process", "mla": cfg.to_dict()})
    return replace(stock, model=model, info=info)


def compress_in_process(stock: LoadedModel, *, copy_model: bool = True, mode: str = "compressed") -> LoadedModel:
    """A load-time cache mode of `stock` ("compressed", the default, or "exact": stock's transcript)."""
    from engine.mla.exact_latent import apply_cache_mode

    model = copy.deepcopy(stock.model) if copy_model else stock.model
    applied = apply_cache_mode(model, mode, source=stock.info.source)
    info = ModelInfo(source=stock.info.source, name=f"{stock.info.name} (compressed)",
                     multilingual=stock.info.multilingual, kv_mode=applied.kv_mode,
                     extra={"kind": "compressed-in-process", **applied.extra()})
    return replace(stock, model=model, info=info)


def _options(loaded: LoadedModel, beam_size: int, batch_size: int | str, duration_s: float) -> TranscribeOptions:
    if batch_size == "auto":
        from engine.batching import choose_batch_size

        n_windows = max(1, math.ceil(duration_s / 30.0))
        batch_size = choose_batch_size(loaded, beam_size=beam_size, n_windows=n_windows)
    return TranscribeOptions(beam_size=max(1, beam_size), batch_size=max(1, int(batch_size)))


def run_one(label: str, loaded: LoadedModel, file: str | Path, options: TranscribeOptions, *,
            on_sample=None, on_segment=None, on_progress=None, cancel: CancelToken | None = None) -> RunReport:
    """Transcribe `file` under clean conditions with a memory sampler attached."""
    baseline = clean_conditions(loaded.device)
    transcriber = Transcriber(loaded, options)
    sampler = MemorySampler(kv_source=lambda: transcriber.decoder.live_kv_bytes(), device=loaded.device)
    if on_sample:
        sampler.subscribe(lambda s: on_sample(label, s))
    log.info("%s run: %s, beam %d, batch %d", label, loaded.info.kv_mode, options.beam_size, options.batch_size)
    with sampler:
        transcript = transcriber.transcribe(
            file, cancel=cancel,
            progress=(lambda p: on_progress(label, p)) if on_progress else None,
            on_segment=(lambda s: on_segment(label, s)) if on_segment else None)
    assert transcript.stats is not None
    return RunReport(label, loaded.info, transcript.text, transcript.stats, baseline, sampler.samples,
                     options.beam_size, options.batch_size, transcript.complete)


def run_comparison(
    file: str | Path,
    *,
    stock_spec: str | LoadedModel | None = None,
    mla_spec: str | LoadedModel | None = None,
    kv_reduction: float | None = None,
    cache_mode: str = "compressed",
    device: str = "cpu",
    beam_size: int = 1,
    batch_size: int | str = 1,
    reference_text: str | None = None,
    on_sample: Callable[[str, MemorySample], None] | None = None,
    on_segment: Callable[[str, Segment], None] | None = None,
    on_progress: Callable[[str, Progress], None] | None = None,
    cancel: CancelToken | None = None,
) -> ComparisonReport:
    """Transcribe `file` with stock Whisper, then with Whisper-MLA, and compare (see the module docstring).

    `stock_spec`: any `resolve_model` spec (default tiny.en) or an already loaded model.
    `mla_spec`: a saved MLA folder (or loaded MLA model); when None the stock model is
    converted in process, in place when this function loaded it itself, on a copy otherwise:
    to the load-time `cache_mode` ("compressed", the default 8-bit latent, or "exact";
    `engine.mla.exact_latent`) when `kv_reduction` is None, else calibrated at `kv_reduction`
    (default calibration audio). `batch_size` may be
    "auto" (chosen per model by `engine.batching`, so MLA may get a larger batch).
    Callbacks get the run label ("stock" / "mla") first; `on_sample` runs on the sampler thread.
    """
    duration = probe(file).duration_s  # a bad file fails here, before any model is loaded
    owned = not isinstance(stock_spec, LoadedModel)
    stock = resolve_model(stock_spec, device=device) if owned else stock_spec
    if getattr(stock.model, "mla_config", None) is not None:
        raise ValueError(f"{stock.info.source}: the stock side is already an MLA model")
    kw = dict(on_sample=on_sample, on_segment=on_segment, on_progress=on_progress, cancel=cancel)
    stock_run = run_one("stock", stock, file, _options(stock, beam_size, batch_size, duration), **kw)
    report = ComparisonReport(str(file), stock_run.stats.audio_s, stock_run, None)
    if cancel is not None and cancel.cancelled:
        return report
    if isinstance(mla_spec, LoadedModel):
        mla = mla_spec
    elif mla_spec is not None:  # a converted folder: its ranks, its latent in 8 bits under "compressed"
        mla = resolve_model(mla_spec, device=device, kv_cache=cache_mode)
    elif kv_reduction is None:
        mla = compress_in_process(stock, copy_model=not owned, mode=cache_mode)
    else:
        mla = convert_in_process(stock, kv_reduction, copy_model=not owned)
    if getattr(mla.model, "mla_config", None) is None:
        log.warning("%s is not an MLA model; comparing two stock models", mla.info.source)
    del stock
    report.mla = run_one("mla", mla, file, _options(mla, beam_size, batch_size, duration), **kw)
    fill_scores(report, reference_text)
    return report


def fill_scores(report: ComparisonReport, reference_text: str | None = None) -> None:
    """WERs, KV saving and word diff from the two finished runs."""
    if report.mla is None:
        return
    s, m = report.stock, report.mla
    report.wer_mla_vs_stock = word_error_rate([s.text], [m.text]).wer if normalize(s.text).strip() else None
    if reference_text is not None and normalize(reference_text).strip():
        report.wer_stock_vs_reference = word_error_rate([reference_text], [s.text]).wer
        report.wer_mla_vs_reference = word_error_rate([reference_text], [m.text]).wer
    report.kv_saving = kv_saving(s.stats, m.stats)
    report.word_diff = word_diff(s.text, m.text)


def plot_comparison(report: ComparisonReport | dict[str, Any], out_png: str | Path) -> Path:
    """PNG of the two memory timelines (needs matplotlib: pip install 'whisper-mla[plot]')."""
    from engine.memory.plot import plot_comparison as _plot

    return _plot(report.to_dict() if isinstance(report, ComparisonReport) else report, out_png)
