"""Regenerate docs/screenshots/*.png with the real app, real model and real recordings.

    QT_QPA_PLATFORM=offscreen python -m app.screenshots [--audio LONG.flac] [--compare-audio FILE]
        [--compare-seconds 65] [--out docs/screenshots]

Shots: the main window while a long recording is being transcribed (live progress, ETA,
memory), the same window with a finished transcript and a search, and the comparison
window after stock vs MLA on one recording. Takes a few minutes on a laptop CPU.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from PySide6.QtCore import QEventLoop, QSettings, QTimer

REPO = Path(__file__).resolve().parents[1]
SHARED_LONG = REPO.parent / "shared" / "audio" / "longform_librispeech_concat.flac"


def wait(predicate, timeout_s: float, app) -> bool:
    """Run the event loop until `predicate()` or the timeout."""
    deadline = time.monotonic() + timeout_s
    loop = QEventLoop()
    timer = QTimer()
    timer.timeout.connect(lambda: loop.quit() if predicate() or time.monotonic() > deadline else None)
    timer.start(100)
    loop.exec()
    timer.stop()
    return predicate()


def excerpt(path: Path, seconds: float, out_dir: Path) -> Path:
    """The first `seconds` of a recording as a wav (so the comparison takes minutes, not hours)."""
    import numpy as np
    import soundfile as sf

    from engine.audio import load_audio

    audio = load_audio(path)[: int(seconds * 16000)]
    out = out_dir / f"{path.stem}_first{int(seconds)}s.wav"
    sf.write(str(out), np.asarray(audio), 16000)
    return out


def shoot_main(app, window, args) -> int:
    """The queue mid-way through the long recording, then finished with a search."""
    from app.jobs.job import Status
    from app.paths import sample_recording

    extra = sorted((REPO / "tests" / "data" / "audio").glob("*.flac"))[:2]
    jobs = window.add_paths([args.audio, sample_recording(), *extra])
    long_job = jobs[0]
    window.job_panel.select(long_job)
    print(f"transcribing {args.audio.name} ...", flush=True)
    if wait(lambda: long_job.fraction >= 0.45 or long_job.status.finished, 1800, app):
        app.processEvents()
        window.grab().save(str(args.out / "main_transcribing.png"))
        print("saved main_transcribing.png", flush=True)
    wait(lambda: all(j.status.finished for j in jobs), 3600, app)
    if long_job.status is not Status.DONE:
        print(f"the long job did not finish: {long_job.status_text}", file=sys.stderr)
        return 1
    window.job_panel.select(long_job)
    window.transcript.search.setText(args.search)
    window.transcript.next_match()
    app.processEvents()
    window.grab().save(str(args.out / "main_done_search.png"))
    print("saved main_done_search.png", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    from app.paths import sample_recording

    default_long = SHARED_LONG if SHARED_LONG.is_file() else sample_recording()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--audio", type=Path, default=default_long, help="recording for the main window shots")
    p.add_argument("--compare-audio", type=Path, default=default_long, help="recording for the comparison")
    p.add_argument("--compare-seconds", type=float, default=65.0, help="use only the start of it (0: all)")
    p.add_argument("--kv-reduction", type=float, default=0.75)
    p.add_argument("--search", default="could", help="word searched in the finished transcript")
    p.add_argument("--only", choices=("main", "compare"), help="take only these shots")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    args = p.parse_args(argv)

    from app.main import make_app

    app = make_app()
    from app.compare.window import CompareWindow
    from app.main_window import MainWindow
    from app.model_choice import ModelChoice
    from app.settings import AppSettings

    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="whisper-mla-shots-"))
    settings = AppSettings(QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat))
    settings.output_dir = tmp / "transcripts"
    settings.models_dir = tmp / "models"
    window = MainWindow(settings, preload=args.only != "compare")
    window.confirm_quit = lambda n: True
    window.resize(1200, 780)
    window.show()

    if args.only != "compare":
        code = shoot_main(app, window, args)
        if code:
            return code
    if args.only == "main":
        window.close()
        return 0
    compare_file = args.compare_audio
    if args.compare_seconds > 0:
        compare_file = excerpt(compare_file, args.compare_seconds, tmp)
    cmp = CompareWindow(settings, window)
    cmp.resize(1200, 820)
    cmp.set_file(compare_file)
    cmp.set_choice(ModelChoice(kv_mode="mla", kv_reduction=args.kv_reduction))
    cmp.show()
    cmp.run()
    print(f"comparing on {compare_file.name} ...", flush=True)
    if not wait(lambda: not cmp.runner.busy, 3600, app) or cmp.report is None:
        print("the comparison did not finish", file=sys.stderr)
        return 1
    cmp.kv_chart.redraw()
    cmp.mem_chart.redraw()
    app.processEvents()
    cmp.grab().save(str(args.out / "compare.png"))
    print("saved compare.png", flush=True)
    cmp.close()
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
