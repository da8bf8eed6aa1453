"""Model conversion (MLA) as a background task on its own worker process, with stages and cancel.

A separate process keeps the transcription queue running meanwhile, and cancel is a plain
kill: conversion has no natural checkpoints and leaves nothing half-written (the engine
saves atomically).
"""
from __future__ import annotations

import itertools
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from app.model_choice import ModelChoice
from app.worker import protocol as P
from app.worker.client import WorkerClient

_ids = itertools.count(1_000_000)


class ConversionRunner(QObject):
    stage = Signal(str)
    finished = Signal(str, str)  # folder, description
    failed = Signal(str)
    cancelled = Signal()

    def __init__(self, models_dir: Path, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.models_dir = Path(models_dir)
        # One client for the runner's life; its process exists only while a conversion runs.
        self.worker = WorkerClient(self, cancel_grace_s=0.5)
        self.worker.event.connect(self._on_event)
        self.worker.crashed.connect(lambda _job, text: self._end(self.failed, text))
        self.job: int | None = None

    @property
    def busy(self) -> bool:
        return self.job is not None

    def start(self, choice: ModelChoice) -> Path:
        if self.busy:
            raise RuntimeError("a conversion is already running")
        if not choice.is_mla:
            from dataclasses import replace

            choice = replace(choice, kv_mode="mla")
        out = self.models_dir / choice.conversion_name()
        self.job = next(_ids)
        self.stage.emit("Starting conversion")
        self.worker.submit(P.msg(P.CONVERT, self.job, model=choice.to_dict(), out_dir=str(out)))
        return out

    def cancel(self) -> None:
        if self.job is not None:
            self.worker.cancel(self.job, grace_s=0.2)

    def _on_event(self, m: dict) -> None:
        if m.get("job") != self.job:
            return
        kind = m["type"]
        if kind == P.STAGE:
            self.stage.emit(m.get("text", ""))
        elif kind == P.CONVERTED:
            self._end(self.finished, m["folder"], m.get("description", ""))
        elif kind == P.ERROR:
            self._end(self.failed, m.get("message", "conversion failed"))
        elif kind == P.CANCELLED:
            self._end(self.cancelled)

    def _end(self, signal, *args) -> None:
        self.job = None
        self.worker.shutdown(timeout_s=2.0)  # frees the conversion's memory at once
        signal.emit(*args)

    def shutdown(self) -> None:
        self.job = None
        self.worker.shutdown(timeout_s=1.0)
