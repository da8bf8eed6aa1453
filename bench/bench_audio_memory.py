"""Does AudioReader stay flat in memory over a 2-hour file, and how fast does it decode?

Synthesises a long 16 kHz mono file by looping a real recording (default: the LibriSpeech
long-form concat in ../shared/audio), then streams through it the way the long-form
transcriber does (30 s windows, advancing <= 30 s), sampling process RSS as it goes.

    python bench/bench_audio_memory.py [--audio X.flac] [--hours 2] [--codec flac]
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.audio import SAMPLE_RATE, AudioReader, iter_chunks, probe  # noqa: E402

EXT = {"flac": "flac", "libmp3lame": "mp3", "aac": "m4a", "libopus": "ogg"}
MB = 1024 * 1024


def synthesise(src: Path, out: Path, seconds: float, codec: str) -> None:
    """Loop `src` (decoded in chunks) into `out` until `seconds` of audio; bounded memory."""
    rate = 48000 if codec == "libopus" else SAMPLE_RATE
    total, written = round(seconds * SAMPLE_RATE), 0
    with av.open(str(out), "w") as c:
        s = c.add_stream(codec, rate=rate)
        s.layout = "mono"
        cc = s.codec_context
        rs = av.AudioResampler(cc.codec.audio_formats[0].name, "mono", rate, frame_size=cc.frame_size or None)
        while written < total:
            for chunk in iter_chunks(src, 30.0):
                chunk = chunk[: total - written]
                fr = av.AudioFrame.from_ndarray(chunk[None, :], format="flt", layout="mono")
                fr.sample_rate, fr.pts, fr.time_base = SAMPLE_RATE, written, Fraction(1, SAMPLE_RATE)
                for f in rs.resample(fr):
                    c.mux(s.encode(f))
                written += len(chunk)
                if written >= total:
                    break
        for f in rs.resample(None):
            c.mux(s.encode(f))
        c.mux(s.encode(None))


class RssSampler(threading.Thread):
    """Polls RSS in the background so short spikes between reads are not missed."""

    def __init__(self, interval_s: float) -> None:
        super().__init__(daemon=True)
        self.proc, self.interval, self.peak, self.stop = psutil.Process(), interval_s, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--audio", type=Path, default=REPO / "../shared/audio/longform_librispeech_concat.flac")
    ap.add_argument("--hours", type=float, default=2.0)
    ap.add_argument("--codec", choices=sorted(EXT), default="flac")
    ap.add_argument("--window-s", type=float, default=30.0)
    ap.add_argument("--step-s", type=float, default=30.0)
    ap.add_argument("--sample-every-s", type=float, default=60.0, help="audio seconds between RSS log lines")
    ap.add_argument("--work-dir", type=Path, default=REPO / "bench" / "out")
    args = ap.parse_args()
    if not args.audio.exists():
        sys.exit(f"source audio not found: {args.audio} (pass --audio)")

    seconds = args.hours * 3600
    args.work_dir.mkdir(parents=True, exist_ok=True)
    long = args.work_dir / f"loop_{args.hours:g}h.{EXT[args.codec]}"
    if not long.exists() or abs(probe(long).duration_s - seconds) > 1:
        t = time.perf_counter()
        synthesise(args.audio, long, seconds, args.codec)
        print(f"synthesised {long} ({long.stat().st_size / MB:.0f} MiB) in {time.perf_counter() - t:.1f} s")
    info = probe(long)
    print(f"file: {info.duration_s / 3600:.2f} h, {info.codec}/{info.container}, {info.sample_rate} Hz")

    proc = psutil.Process()
    win, step = round(args.window_s * SAMPLE_RATE), round(args.step_s * SAMPLE_RATE)
    sampler = RssSampler(0.02)
    base = proc.memory_info().rss
    sampler.start()
    at: dict[int, int] = {}  # audio minute -> RSS
    next_log, checksum = 0.0, 0.0
    t0 = time.perf_counter()
    with AudioReader(long) as r:
        start = 0
        while start < r.total_samples or not r.exhausted:
            w = r.read(start, win)
            checksum += float(np.abs(w).sum())
            pos_s = start / SAMPLE_RATE
            rss = proc.memory_info().rss
            at[int(pos_s // 60)] = rss
            if pos_s >= next_log:
                print(f"  audio {pos_s / 60:6.1f} min  RSS {rss / MB:7.1f} MiB  ({time.perf_counter() - t0:5.1f} s)")
                next_log += args.sample_every_s
            start += step
        total = r.total_samples
    wall = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()

    m10, mlast = at.get(10, 0), at[max(at)]
    print(f"baseline RSS before reader: {base / MB:.1f} MiB")
    print(f"peak RSS while streaming:   {max(sampler.peak, max(at.values())) / MB:.1f} MiB")
    print(f"RSS at audio minute 10:     {m10 / MB:.1f} MiB")
    print(f"RSS at audio minute {max(at)}:    {mlast / MB:.1f} MiB")
    print(f"growth minute 10 -> {max(at)}:    {(mlast - m10) / MB:+.1f} MiB")
    print(f"decoded {total / SAMPLE_RATE / 3600:.3f} h in {wall:.1f} s = {total / SAMPLE_RATE / wall:.0f}x realtime"
          f" (window {args.window_s:g} s, step {args.step_s:g} s, checksum {checksum:.1f})")


if __name__ == "__main__":
    main()
