"""`whisper-mla-gui --self-test`: open the window, transcribe the bundled sample through the real
worker process, check the words, exit 0 (or non-zero with a message). Used by CI and by the
packaged build's smoke test."""
from __future__ import annotations

import re
import sys
import tempfile
import time
from pathlib import Path

from PySide6.QtCore import QEventLoop, QSettings, QTimer
from PySide6.QtWidgets import QApplication

EXPECTED = "ask not what your country can do for you"


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def _say(text: str) -> None:
    stream = sys.stdout or sys.stderr  # a Windows GUI build may have neither
    if stream is not None:
        stream.write(text + "\n")
        stream.flush()


def run(app: QApplication, timeout_s: float = 300.0) -> int:
    from app.jobs.job import Status
    from app.main_window import MainWindow
    from app.paths import sample_recording
    from app.settings import AppSettings

    sample = sample_recording()
    if sample is None:
        _say("self-test FAILED: the sample recording assets/samples/jfk_inaugural_excerpt.flac is missing")
        return 3
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="whisper-mla-self-test-") as tmp:
        settings = AppSettings(QSettings(str(Path(tmp) / "settings.ini"), QSettings.Format.IniFormat))
        settings.output_dir = Path(tmp) / "out"
        settings.models_dir = Path(tmp) / "models"
        window = MainWindow(settings, preload=False)
        window.show()
        jobs = window.add_paths([sample])
        if len(jobs) != 1:
            _say("self-test FAILED: the sample could not be queued")
            return 4
        job = jobs[0]
        loop = QEventLoop()
        window.controller.jobFinished.connect(lambda job_id: loop.quit() if job_id == job.id else None)
        timer = QTimer()
        timer.setSingleShot(True)
        timer.timeout.connect(loop.quit)
        timer.start(int(timeout_s * 1000))
        loop.exec()
        timed_out = not job.status.finished
        text = job.text
        saved = list(job.saved)
        window.confirm_quit = lambda n: True  # on timeout: stop the job without asking
        window.close()
        app.processEvents()
        elapsed = time.monotonic() - start
        if timed_out:
            _say(f"self-test FAILED: no result within {timeout_s:.0f} s (status: {job.status_text})")
            return 5
        if job.status is not Status.DONE:
            _say(f"self-test FAILED: {job.status_text}")
            return 6
        if EXPECTED not in normalise(text):
            _say(f"self-test FAILED: expected words not found in the transcript: {text!r}")
            return 7
        if not saved:
            _say("self-test FAILED: the transcript was not saved")
            return 8
        _say(f"self-test OK in {elapsed:.1f} s: {text}")
        return 0
