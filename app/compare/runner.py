"""Drives one comparison on its own worker process and turns its events into typed signals."""
from __future__ import annotations

import itertools
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from app.model_choice import ModelChoice
from app.worker import protocol as P
from app.worker.client import WorkerClient
from engine.results import Progress, Segment

_ids = itertools.count(2_000_000)


class CompareRunner(QObject):
    sample = Signal(str, object)  # label ("stock" / "mla"), MemorySample dict
    segment = Signal(str, object)  # label, Segment
    progress = Signal(str, float, object)  # label, fraction, eta seconds or None
    stage = Signal(str)
    finished = Signal(object)  # ComparisonReport dict
    failed = Signal(str)
    cancelled = Signal()

    def __init__(self, models_dir: Path, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.models_dir = Path(models_dir)
        self.worker = WorkerClient(self)
        self.worker.event.connect(self._on_event)
        self.worker.crashed.connect(lambda job, text: self._end(job, self.failed, text))
        self.job: int | None = None

    @property
    def busy(self) -> bool:
        return self.job is not None

    def start(self, path: Path, choice: ModelChoice) -> None:
        if self.busy:
            raise RuntimeError("a comparison is already running")
        self.job = next(_ids)
        self.worker.submit(P.msg(P.COMPARE, self.job, path=str(path), model=choice.to_dict(),
                                 models_dir=str(self.models_dir)))

    def cancel(self) -> None:
        if self.job is not None:
            self.worker.cancel(self.job)

    def _on_event(self, m: dict) -> None:
        if m.get("job") != self.job or self.job is None:
            return
        kind, label = m["type"], m.get("label") or ""
        if kind == P.MEMORY:
            self.sample.emit(label, m["sample"])
        elif kind == P.SEGMENT:
            self.segment.emit(label, Segment.from_dict(m["segment"]))
        elif kind == P.PROGRESS:
            p = Progress(m["done_s"], m["total_s"], m["elapsed_s"])
            self.progress.emit(label, p.fraction, p.eta_s)
        elif kind == P.STAGE:
            self.stage.emit(m.get("text", ""))
        elif kind == P.COMPARED:
            self._end(self.job, self.finished, m["report"])
        elif kind == P.ERROR:
            self._end(self.job, self.failed, m.get("message", "comparison failed"))
        elif kind == P.CANCELLED:
            self._end(self.job, self.cancelled)

    def _end(self, job, signal, *args) -> None:
        if job is not None and job != self.job:
            return
        self.job = None
        signal.emit(*args)

    def shutdown(self) -> None:
        self.job = None
        self.worker.shutdown(timeout_s=2.0)
