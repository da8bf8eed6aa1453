"""Read a file's duration off the GUI thread (engine.audio.probe: header only, no torch)."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal


class _Signals(QObject):
    done = Signal(int, object, str)  # job id, duration seconds or None, error text


class _ProbeTask(QRunnable):
    def __init__(self, job_id: int, path: Path, signals: _Signals) -> None:
        super().__init__()
        self.job_id, self.path, self.signals = job_id, path, signals

    def run(self) -> None:
        try:
            from engine.audio import AudioError, probe  # inside the try: a broken install must not hang the job
        except Exception as e:
            self.signals.done.emit(self.job_id, None, f"Cannot read audio: the engine failed to load ({e})")
            return
        try:
            info = probe(self.path)
        except AudioError as e:
            self.signals.done.emit(self.job_id, None, f"Cannot read this file: {e.reason}")
        except Exception as e:  # a probe must never take the app down
            self.signals.done.emit(self.job_id, None, f"Cannot read this file: {type(e).__name__}: {e}")
        else:
            self.signals.done.emit(self.job_id, float(info.duration_s), "")


class Prober(QObject):
    """`probe(job_id, path)`; answers arrive on `done(job_id, duration_or_None, error)` in the GUI thread."""

    done = Signal(int, object, str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(2)
        self._signals = _Signals()
        self._signals.done.connect(self.done)

    def probe(self, job_id: int, path: Path) -> None:
        self.pool.start(_ProbeTask(job_id, path, self._signals))

    def wait(self, msecs: int = 5000) -> bool:
        return self.pool.waitForDone(msecs)
