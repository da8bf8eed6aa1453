"""Model tasks (MLA conversion, fine-tuning) in the background on their own worker process.

A separate process keeps the transcription queue running meanwhile. Cancelling a
conversion is a plain kill: it has no natural checkpoints and leaves nothing half-written
(the engine saves atomically). Cancelling a fine-tuning run asks it to stop: it then saves
a checkpoint and writes the best weights so far, which takes a few seconds, so the kill
comes only after a long grace period.
"""
from __future__ import annotations

import itertools
from datetime import datetime
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from app.model_choice import ModelChoice
from app.worker import protocol as P
from app.worker.client import WorkerClient

_ids = itertools.count(1_000_000)


FINETUNE_CANCEL_GRACE_S = 120.0  # a cancelled fine-tune writes its model before it stops


class ConversionRunner(QObject):
    stage = Signal(str)
    fraction = Signal(float)  # 0-1 when a task knows how far it is (fine-tuning)
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
        self.kind: str | None = None  # P.CONVERT or P.FINETUNE while busy

    @property
    def busy(self) -> bool:
        return self.job is not None

    def start(self, choice: ModelChoice, calibration: list[Path] | None = None) -> Path:
        """Convert `choice` to MLA, calibrated on `calibration` (the user's recordings) when given."""
        if self.busy:
            raise RuntimeError("a conversion is already running")
        if not choice.is_mla:
            from dataclasses import replace

            choice = replace(choice, kv_mode="mla")
        out = self.models_dir / choice.conversion_name()
        self.job, self.kind = next(_ids), P.CONVERT
        self.stage.emit("Starting conversion")
        self.worker.submit(P.msg(P.CONVERT, self.job, model=choice.to_dict(), out_dir=str(out),
                                 calibration=[str(p) for p in calibration or []]))
        return out

    def start_finetune(self, model_dir: str | Path, audio: list[Path], options: dict | None = None) -> Path:
        """Distil the MLA folder `model_dir` on `audio`; the result is a new folder next to the conversions."""
        if self.busy:
            raise RuntimeError("a model task is already running")
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = self.models_dir / f"{Path(model_dir).name}-tuned-{stamp}"
        self.job, self.kind = next(_ids), P.FINETUNE
        self.stage.emit("Starting fine-tuning")
        self.worker.submit(P.msg(P.FINETUNE, self.job, model_dir=str(model_dir), audio=[str(a) for a in audio],
                                 out_dir=str(out), options=dict(options or {})))
        return out

    def cancel(self) -> None:
        if self.job is not None:
            grace = FINETUNE_CANCEL_GRACE_S if self.kind == P.FINETUNE else 0.2
            self.worker.cancel(self.job, grace_s=grace)

    def _on_event(self, m: dict) -> None:
        if m.get("job") != self.job:
            return
        kind = m["type"]
        if kind == P.STAGE:
            self.stage.emit(m.get("text", ""))
            if m.get("fraction") is not None:
                self.fraction.emit(float(m["fraction"]))
        elif kind in (P.CONVERTED, P.FINETUNED):
            description = m.get("description", "")
            if m.get("stopped") == "cancelled":
                description += "; stopped early when cancelled"
            self._end(self.finished, m["folder"], description)
        elif kind == P.ERROR:
            self._end(self.failed, m.get("message", "conversion failed"))
        elif kind == P.CANCELLED:
            self._end(self.cancelled)

    def _end(self, signal, *args) -> None:
        self.job, self.kind = None, None
        self.worker.shutdown(timeout_s=2.0)  # frees the conversion's memory at once
        signal.emit(*args)

    def shutdown(self) -> None:
        self.job = None
        self.worker.shutdown(timeout_s=1.0)
