"""kill -9 at a random window of the 5.6-minute LibriSpeech concatenation, resume, compare.

Runs `whisper-mla transcribe` on the file, waits until its resume checkpoint has passed a
randomly chosen window, kills the process with SIGKILL, runs the same command again (which
resumes from the checkpoint), and compares the final segments with an uninterrupted run of
the same command: they must be identical, with ids 0..n-1 (nothing duplicated or missing).
The test suite does the same on ~100 s of the repository's own clips; this is the full-size
check on ../shared/audio.

    python bench/bench_resume.py [--seed S] [--trials 1]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AUDIO = REPO.parent / "shared" / "audio" / "longform_librispeech_concat.flac"
FRAMES_PER_S = 100


def cli(audio: Path, out: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "engine.cli", "transcribe", str(audio), "--format", "json",
                             "--out", str(out), "-q"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def segments(out: Path, audio: Path) -> list[tuple]:
    data = json.loads((out / f"{audio.stem}.json").read_text())
    return [(s["id"], s["start"], s["end"], s["text"]) for s in data["segments"]]


def killed_then_resumed(audio: Path, work: Path, kill_after_s: float) -> tuple[list[tuple], float]:
    """Kill once the checkpoint has passed `kill_after_s` of audio; resume; (segments, killed at s)."""
    out = work / "resumed"
    resume_file = out / f".{audio.stem}.whisper-mla-resume.json"
    proc = cli(audio, out)
    position = 0
    while proc.poll() is None:
        if resume_file.exists():
            try:
                position = json.loads(resume_file.read_text())["point"]["position"]
            except ValueError:
                position = 0
            if position / FRAMES_PER_S >= kill_after_s:
                break
        time.sleep(0.02)
    if proc.poll() is not None:
        raise SystemExit("the run finished before it could be killed; choose an earlier window")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = json.loads(resume_file.read_text())["point"]
    killed_at = saved["position"] / FRAMES_PER_S
    second = cli(audio, out)
    _, err = second.communicate()
    if second.returncode != 0:
        raise SystemExit(f"resume failed: {err}")
    return segments(out, audio), killed_at


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--audio", type=Path, default=AUDIO)
    ap.add_argument("--seed", type=int, default=None, help="random seed for the kill point (default: time)")
    ap.add_argument("--trials", type=int, default=1)
    args = ap.parse_args()
    if not args.audio.is_file():
        raise SystemExit(f"missing {args.audio}")
    rng = random.Random(args.seed if args.seed is not None else time.time_ns())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        straight = cli(args.audio, work / "straight")
        _, err = straight.communicate()
        if straight.returncode != 0:
            raise SystemExit(f"uninterrupted run failed: {err}")
        reference = segments(work / "straight", args.audio)
        duration = reference[-1][2]
        ok = True
        for t in range(args.trials):
            kill_after = rng.uniform(20.0, duration - 60.0)
            got, killed_at = killed_then_resumed(args.audio, work / f"trial{t}", kill_after)
            same = got == reference
            ids_ok = [s[0] for s in got] == list(range(len(got)))
            ok &= same and ids_ok
            print(f"trial {t + 1}: killed (SIGKILL) with the checkpoint at {killed_at:.1f} s of {duration:.1f} s; "
                  f"resumed: {len(got)} segments, identical to the uninterrupted run: {same}, ids 0..n-1: {ids_ok}")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
