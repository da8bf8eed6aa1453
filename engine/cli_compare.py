"""`whisper-mla compare FILE`: stock Whisper vs Whisper-MLA on one file; JSON report, optional PNG chart.

    whisper-mla compare FILE [--model SPEC] [--mla DIR | --kv-reduction R] [--device ...]
        [--beam-size N] [--batch-size N|auto] [--reference TXT] --report OUT.json [--plot OUT.png]

Prints a short table (wall time, RTF, peak RSS / device memory, KV-cache peaks, WER) on
stdout; files are written atomically.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
from pathlib import Path

from engine import cli_args
from engine.atomic import atomic_write_text
from engine.memory.plot import fmt_bytes

log = logging.getLogger(__name__)


def _reduction(text: str) -> float:
    try:
        r = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < r < 1.0:
        raise argparse.ArgumentTypeError("--kv-reduction must be between 0 and 1 (e.g. 0.75 or 0.875)")
    return r


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="stock Whisper vs Whisper-MLA on one file: memory, speed, transcript",
                       description="Transcribe FILE with stock Whisper, then with Whisper-MLA, in the same process; "
                                   "report memory timelines, peaks, speed and the transcript difference.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--model", default=None, help="stock model: bundled name, folder or hub id (default tiny.en)")
    mla = p.add_mutually_exclusive_group()
    mla.add_argument("--mla", default=None, metavar="DIR", help="a saved Whisper-MLA folder (whisper-mla convert)")
    mla.add_argument("--kv-reduction", type=_reduction, default=None,
                     help="convert the stock model in process to this KV reduction, calibrated (e.g. 0.75); "
                          "default: the load-time mode of --kv-cache")
    p.add_argument("--kv-cache", default="compressed", choices=("compressed", "exact"),
                   help="the MLA side when no --mla/--kv-reduction is given: compressed (default: the layer "
                        "input as the latent, in 8 bits, no cross cache) or exact (the same latent unrounded: "
                        "stock's transcript)")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    p.add_argument("--beam-size", type=cli_args.beam_size, default=1)
    p.add_argument("--batch-size", type=cli_args.batch_size, default=1, help="chunks decoded at once, or 'auto'")
    p.add_argument("--reference", default=None, metavar="TXT", help="reference transcript for WER")
    p.add_argument("--report", required=True, metavar="OUT.json", help="where to write the JSON report")
    p.add_argument("--plot", default=None, metavar="OUT.png", help="also draw the memory timelines (matplotlib)")
    p.set_defaults(func=run)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def summary_table(report: dict) -> str:
    """The few lines printed after a comparison."""
    rows = [("", "stock", "MLA")]
    runs = [report["stock"], report.get("mla") or {}]

    def get(run: dict, key: str, fmt=str) -> str:
        v = run.get(key)
        return "n/a" if v is None else fmt(v)

    rows.append(("model", get(runs[0], "model", lambda m: m["kv_mode"]), get(runs[1], "model", lambda m: m["kv_mode"])))
    rows.append(("wall time", *(get(r, "wall_s", lambda v: f"{v:.2f} s") for r in runs)))
    rows.append(("RTF", *(get(r, "rtf", lambda v: f"{v:.3f}") for r in runs)))
    rows.append(("peak RSS", *(get(r, "peak_rss_bytes", fmt_bytes) for r in runs)))
    rows.append(("RSS above start", *(fmt_bytes(r["peak_rss_bytes"] - r["rss_baseline_bytes"])
                                      if r.get("rss_baseline_bytes") is not None else "n/a" for r in runs)))
    rows.append(("peak device memory", *(get(r, "peak_device_bytes", fmt_bytes) for r in runs)))
    for part in ("self", "cross"):
        rows.append((f"KV cache peak ({part})",
                     *(get(r, "kv_cache_peak_bytes", lambda kv, p=part: fmt_bytes(kv[p])) for r in runs)))
    if report.get("wer_stock_vs_reference") is not None:
        rows.append(("WER vs reference", _pct(report["wer_stock_vs_reference"]), _pct(report["wer_mla_vs_reference"])))
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{a:<{w[0]}}  {b:>{w[1]}}  {c:>{w[2]}}" for a, b, c in rows]
    sv = report.get("kv_saving")
    if sv:
        pct = lambda p: "n/a" if p is None else f"{p:.1f}%"  # noqa: E731
        lines.append(f"KV-cache saving: self-attention {pct(sv['self_pct'])} ({fmt_bytes(sv['self_bytes'])}), "
                     f"total {pct(sv['total_pct'])} ({fmt_bytes(sv['total_bytes'])})")
    if report.get("wer_mla_vs_stock") is not None:
        changed = sum(1 for op in report.get("word_diff", []) if op["op"] != "equal")
        lines.append(f"WER of MLA against stock: {_pct(report['wer_mla_vs_stock'])} ({changed} differing stretches)")
    for part in report.get("mla_parts", []):
        lines.append(f"MLA side, {part}")
    if not report.get("complete", True):
        lines.append("incomplete: cancelled or stopped early")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from engine.audio import AudioError
    from engine.model_sources import ModelSourceError

    reference = None
    if args.reference:
        try:
            reference = Path(args.reference).read_text(encoding="utf-8").strip()
        except OSError as e:
            print(f"error: {args.reference}: {e.strerror or e}", file=sys.stderr)
            return 2
    for out in filter(None, (args.report, args.plot)):
        if not Path(out).parent.resolve().is_dir():
            print(f"error: {out}: folder does not exist", file=sys.stderr)
            return 2
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        print("error: --plot needs matplotlib: pip install 'whisper-mla[plot]'", file=sys.stderr)
        return 2
    from engine.compare import plot_comparison, run_comparison

    def progress(label: str, p) -> None:
        if sys.stderr.isatty():
            sys.stderr.write(f"\r{label:>5}: {100 * p.fraction:3.0f}% ({p.done_s:.0f}/{p.total_s:.0f} s)   ")
            sys.stderr.flush()

    try:
        report = run_comparison(args.file, stock_spec=args.model, mla_spec=args.mla, kv_reduction=args.kv_reduction,
                                cache_mode=args.kv_cache,
                                device=args.device, beam_size=args.beam_size, batch_size=args.batch_size,
                                reference_text=reference, on_progress=progress)
    except (AudioError, ModelSourceError, ValueError) as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 1
    if sys.stderr.isatty():
        sys.stderr.write("\r" + " " * 40 + "\r")
    data = report.to_dict()
    try:
        atomic_write_text(args.report, json.dumps(data, indent=1) + "\n")
        if args.plot:
            plot_comparison(data, args.plot)
    except OSError as e:
        print(f"error: cannot write output ({e.strerror or e})", file=sys.stderr)
        return 1
    print(summary_table(data))
    print(f"report: {args.report}" + (f", chart: {args.plot}" if args.plot else ""))
    return 0 if report.complete else 1
