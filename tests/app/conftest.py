"""Fixtures for the GUI tests: offscreen Qt, temp settings, one worker process shared by most tests.

The real worker process and the real bundled model are used throughout. Sharing one worker
keeps the model loaded between tests (as it stays loaded between a user's jobs), which keeps
the suite within a few minutes on two cores. Tests that kill or crash a worker get their own.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from app import qt_compat  # noqa: E402

qt_compat.install()  # before any widget: PySide6 6.12.0 refcount bug on CPython 3.11

from gui_helpers import DATA, SAMPLE  # noqa: E402


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """Converted MLA models, shared by the session (a conversion is made once, as for a user)."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture
def settings(tmp_path, models_dir):
    from PySide6.QtCore import QSettings

    from app.settings import AppSettings

    s = AppSettings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    s.output_dir = tmp_path / "out"
    s.models_dir = models_dir
    return s


@pytest.fixture(scope="session")
def shared_worker(qapp):
    from app.worker.client import WorkerClient

    worker = WorkerClient()
    yield worker
    worker.shutdown()


@pytest.fixture
def make_window(qtbot, settings, shared_worker):
    """Build main windows on the shared worker; each is closed (and detached) after the test."""
    from app.main_window import MainWindow

    windows = []

    def make(worker=shared_worker, settings=settings, preload=False):
        w = MainWindow(settings, worker=worker, preload=preload)
        w.confirm_quit = lambda n: True
        qtbot.addWidget(w)
        windows.append(w)
        return w

    yield make
    for w in windows:
        w.close()
    if not shared_worker.idle:  # a test left a job running: let it stop before the next test
        job = shared_worker.busy_job
        shared_worker.cancel(job, grace_s=15)
        qtbot.waitUntil(lambda: shared_worker.idle, timeout=30_000)


@pytest.fixture
def window(make_window):
    return make_window()


@pytest.fixture(scope="session")
def long_recording(tmp_path_factory) -> Path:
    """About 70 s of real English speech (the repo's clips, twice, 1 s apart): three 30 s windows.

    Not one clip repeated: text that repeats inside a window looks like a decoding loop to
    Whisper's compression-ratio check and triggers slow temperature fallbacks.
    """
    from engine.audio import load_audio

    clips = [SAMPLE] + sorted(DATA.glob("*.flac"))
    gap = np.zeros(16000, dtype=np.float32)
    pieces = []
    for clip in clips + clips[::-1]:
        pieces += [load_audio(clip), gap]
    path = tmp_path_factory.mktemp("audio") / "speech_70s.wav"
    import soundfile as sf

    sf.write(str(path), np.concatenate(pieces), 16000)
    return path


@pytest.fixture
def bad_file(tmp_path) -> Path:
    path = tmp_path / "x.wav"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    return path
