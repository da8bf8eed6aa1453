"""PNG chart of a comparison report (`ComparisonReport.to_dict()`): memory over time, stock vs MLA.

Panels share one time axis (seconds since each run started, so both runs overlay):
decoder self-attention KV cache (what MLA compresses), cross-attention KV cache (when either
run holds one), and device memory (torch allocated, on a GPU) or process RSS above the
run's baseline (on CPU). Each curve's peak is marked; the title gives the saving in % and
bytes. Needs matplotlib (the `plot` extra); uses the non-interactive Agg backend.
"""
from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

from engine.atomic import atomic_write_bytes

log = logging.getLogger(__name__)

COLORS = {"stock": "#d62728", "mla": "#1f77b4"}


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "n/a"
    sign = "-" if n < 0 else ""
    n = abs(float(n))
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{sign}{n:.0f} {unit}" if unit == "B" else f"{sign}{n:.2f} {unit}"
        n /= 1024
    return f"{sign}{n:.2f} GiB"


def _scale(peak: float) -> tuple[float, str]:
    for div, unit in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if peak >= div:
            return float(div), unit
    return 1.0, "B"


def _series(run: dict[str, Any], key: str) -> tuple[list[float], list[float]]:
    t, y = [], []
    base = run.get("rss_baseline_bytes") or 0
    for s in run.get("timeline", []):
        if key == "kv_cross":
            v = s["kv_cross_bytes"]
        elif key == "kv_self":
            v = s["kv_self_bytes"]
        elif key == "device":
            v = s.get("torch_allocated_bytes")
        else:  # rss above baseline
            v = s["rss_bytes"] - base
        if v is not None:
            t.append(s["t"])
            y.append(float(v))
    return t, y


def _label(label: str, run: dict[str, Any]) -> str:
    mode = run.get("model", {}).get("kv_mode", "")
    return "stock Whisper" if label == "stock" else f"Whisper-MLA ({mode})"


def _panel(ax, runs: dict[str, dict[str, Any]], key: str, title: str, t_max: float) -> None:
    peak_all = max((max(_series(r, key)[1], default=0.0) for r in runs.values()), default=0.0)
    div, unit = _scale(peak_all)
    for label, run in runs.items():
        t, y = _series(run, key)
        if not t:
            continue
        color = COLORS.get(label)
        ax.plot(t, [v / div for v in y], color=color, lw=1.6, label=_label(label, run), drawstyle="steps-post")
        i = max(range(len(y)), key=y.__getitem__)
        ax.plot([t[i]], [y[i] / div], "o", color=color, ms=5)
        right = t_max > 0 and t[i] > 0.6 * t_max  # near the right edge: write the label to the left
        ax.annotate(f"{label} peak {fmt_bytes(y[i])}", (t[i], y[i] / div), textcoords="offset points",
                    xytext=(-8 if right else 8, 5 if label == "stock" else -13), ha="right" if right else "left",
                    fontsize=8.5, color=color, fontweight="bold",
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8))
    ax.set_title(title, fontsize=10, loc="left")
    ax.set_ylabel(unit)
    ax.set_ylim(bottom=min(0.0, ax.get_ylim()[0]), top=max(ax.get_ylim()[1], peak_all / div * 1.2 or 1.0))
    ax.grid(alpha=0.3)


def _title(report: dict[str, Any]) -> str:
    sv = report.get("kv_saving") or {}
    name = Path(report.get("file", "")).name
    parts = [f"{name} ({report.get('duration', 0):.0f} s)"]
    if sv:
        pct = lambda p: "n/a" if p is None else f"{p:.1f}%"  # noqa: E731
        parts.append(f"KV-cache saving: self-attention {pct(sv.get('self_pct'))} ({fmt_bytes(sv.get('self_bytes'))}), "
                     f"total {pct(sv.get('total_pct'))} ({fmt_bytes(sv.get('total_bytes'))})")
    if report.get("wer_mla_vs_stock") is not None:
        parts.append(f"WER MLA vs stock {100 * report['wer_mla_vs_stock']:.1f}%")
    return "\n".join(parts)


def render_png(report: dict[str, Any], dpi: int = 110) -> bytes:
    """The chart as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    runs = {k: report[k] for k in ("stock", "mla") if report.get(k)}
    has_cross = any(max(_series(r, "kv_cross")[1], default=0) > 0 for r in runs.values())
    on_gpu = any(_series(r, "device")[0] for r in runs.values())
    panels = [("kv_self", "Decoder self-attention KV cache")]
    if has_cross:
        panels.append(("kv_cross", "Cross-attention KV cache"))
    panels.append(("device", "GPU memory allocated by torch") if on_gpu
                  else ("rss", "Process RSS above the run's starting RSS"))
    fig = Figure(figsize=(10, 2.6 * len(panels) + 1.0), dpi=dpi, layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    t_max = max((r["timeline"][-1]["t"] for r in runs.values() if r.get("timeline")), default=0.0)
    for ax, (key, title) in zip(axes, panels):
        _panel(ax, runs, key, title, t_max)
    axes[-1].set_xlabel("seconds since the run started")
    fig.suptitle(_title(report), fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=9, frameon=False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def plot_comparison(report: dict[str, Any], out_png: str | Path) -> Path:
    """Write the chart to `out_png` atomically; raises ImportError when matplotlib is missing."""
    try:
        data = render_png(report)
    except ImportError as e:
        raise ImportError("plotting needs matplotlib: pip install 'whisper-mla[plot]'") from e
    return atomic_write_bytes(out_png, data)
