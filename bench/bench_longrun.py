"""End to end on a 2-hour recording: is memory flat, is the last hour as fast as the first?

Synthesises a long file by looping a real recording (default: the 5.6-minute LibriSpeech
concatenation in ../shared/audio, 16 kHz FLAC), then transcribes it with the product's
`Transcriber` (bundled tiny.en, CPU, the CLI's default settings) in this process while a
thread samples RSS. Per loop of the source it reports the wall time and the WER against the
source's reference, so a slowdown or a drift in accuracy late in the file shows up as a row.

    python bench/bench_longrun.py [--hours 2] [--threads 2] [--json bench/out/longrun.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_audio_memory import synthesise  # noqa: E402
from common import format_table, machine_description, median, print_machine, reference_text, wer  # noqa: E402
from engine.audio import probe  # noqa: E402

MB = 1024 * 1024


class RssTimeline(threading.Thread):
    """Samples RSS every `interval_s` together with the audio position the transcriber reported."""

    def __init__(self, interval_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.proc, self.interval, self.stop = psutil.Process(), interval_s, threading.Event()
        self.position_s = 0.0
        self.samples: list[tuple[float, float, int]] = []  # (wall s, audio s, rss bytes)
        self.t0 = time.perf_counter()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.perf_counter() - self.t0, self.position_s, self.proc.memory_info().rss))
            time.sleep(self.interval)

    def peak_between(self, lo_s: float, hi_s: float) -> int:
        return max((r for _, pos, r in self.samples if lo_s <= pos < hi_s), default=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--audio", type=Path, default=REPO.parent / "shared/audio/longform_librispeech_concat.flac")
    ap.add_argument("--hours", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default=None, help="model spec (default: bundled tiny.en)")
    ap.add_argument("--work-dir", type=Path, default=REPO / "bench" / "out")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if not args.audio.exists():
        sys.exit(f"source audio not found: {args.audio} (pass --audio)")

    import torch

    from engine.model_sources import resolve_model
    from engine.transcribe import Transcriber, TranscribeOptions

    torch.set_num_threads(args.threads)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    seconds = args.hours * 3600
    long = args.work_dir / f"loop_{args.hours:g}h.flac"
    if not long.exists() or abs(probe(long).duration_s - seconds) > 1:
        synthesise(args.audio, long, seconds, "flac")
    loop_s = probe(args.audio).duration_s
    reference = reference_text(args.audio)
    desc = machine_description({"threads": args.threads, "file": long.name, "hours": args.hours})
    print_machine(desc)

    loaded = resolve_model(args.model)
    transcriber = Transcriber(loaded, TranscribeOptions())
    timeline = RssTimeline()
    rss_before = timeline.proc.memory_info().rss
    timeline.start()
    wall_at: list[tuple[float, float]] = []  # (audio s done, wall s)

    def progress(p) -> None:
        timeline.position_s = p.done_s
        wall_at.append((p.done_s, p.elapsed_s))

    t = transcriber.transcribe(long, progress=progress)
    timeline.stop.set()
    timeline.join()

    # per loop of the source: wall (from progress reports) and WER of the segments inside it
    n_loops = int(seconds // loop_s)
    rows, loop_walls = [], []
    for k in range(n_loops):
        lo, hi = k * loop_s, (k + 1) * loop_s
        text = " ".join(s.text for s in t.segments if lo <= (s.start + s.end) / 2 < hi)
        w_lo = max((w for d, w in wall_at if d <= lo), default=0.0)
        w_hi = min((w for d, w in wall_at if d >= hi), default=t.stats.wall_s)
        loop_walls.append(w_hi - w_lo)
        rows.append([k + 1, f"{lo / 60:.1f}-{hi / 60:.1f}", f"{w_hi - w_lo:.1f}", f"{100 * wer([reference], [text]).wer:.2f}",
                     f"{timeline.peak_between(lo, hi) / MB:.0f}"])
    print(format_table(["loop", "audio min", "wall s", "WER %", "peak RSS MiB"], rows))

    half = n_loops // 2
    first, last = median(loop_walls[:half]), median(loop_walls[half:])
    rss10 = timeline.peak_between(0, 600)
    rss_end = timeline.peak_between(seconds - 600, seconds + 1)
    peak_after_10 = timeline.peak_between(600, seconds + 1)
    summary = {
        "audio_s": t.stats.audio_s, "wall_s": t.stats.wall_s, "x_realtime": t.stats.audio_s / t.stats.wall_s,
        "segments": len(t.segments), "complete": t.complete,
        "rss_before_mib": rss_before / MB, "peak_rss_first_10min_mib": rss10 / MB,
        "peak_rss_last_10min_mib": rss_end / MB, "peak_rss_after_10min_mib": peak_after_10 / MB,
        "growth_min10_to_end_mib": (peak_after_10 - rss10) / MB,
        "median_loop_wall_first_half_s": first, "median_loop_wall_second_half_s": last,
        "second_half_over_first": last / first,
    }
    for k, v in summary.items():
        print(f"{k:34s} {v:.3f}" if isinstance(v, float) else f"{k:34s} {v}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": desc, "summary": summary, "loops": rows,
                                         "rss_timeline": timeline.samples}, indent=1))


if __name__ == "__main__":
    main()
