"""One file in the queue and everything the UI shows about it (no Qt)."""
from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field
from pathlib import Path

from app import languages
from engine.results import Segment, Transcript

_ids = itertools.count(1)


class Status(enum.Enum):
    CHECKING = "Checking"  # probing the file's duration
    QUEUED = "Queued"
    LOADING = "Loading model"
    RUNNING = "Transcribing"
    CANCELLING = "Cancelling"
    DONE = "Done"
    CANCELLED = "Cancelled"
    ERROR = "Error"

    @property
    def active(self) -> bool:
        """Handed to the worker and not finished."""
        return self in (Status.LOADING, Status.RUNNING, Status.CANCELLING)

    @property
    def finished(self) -> bool:
        return self in (Status.DONE, Status.CANCELLED, Status.ERROR)


@dataclass(eq=False)
class Job:
    path: Path
    model_label: str = ""
    id: int = field(default_factory=lambda: next(_ids))
    status: Status = Status.CHECKING
    duration_s: float | None = None
    fraction: float = 0.0
    eta_s: float | None = None
    stage: str = ""  # the worker's latest stage text
    error: str = ""
    error_detail: str = ""
    segments: list[Segment] = field(default_factory=list)
    transcript: Transcript | None = None
    saved: list[Path] = field(default_factory=list)
    kv_peak_bytes: int = 0
    task: str = "transcribe"  # what the worker was asked: "translate" gives English text
    language: str | None = None  # the speech's language, once the first window is decoded
    language_probability: float | None = None  # when it was detected (None: given, or an English-only model)
    history_key: str = ""  # its record in app.jobs.history once finished; "" before

    @property
    def name(self) -> str:
        return self.path.name

    def reset(self, model_label: str) -> None:
        """Back to the queue (retry) with fresh state."""
        self.status = Status.QUEUED if self.duration_s is not None else Status.CHECKING
        self.model_label = model_label
        self.fraction, self.eta_s, self.stage = 0.0, None, ""
        self.error = self.error_detail = ""
        self.segments, self.transcript, self.saved = [], None, []
        self.kv_peak_bytes = 0
        self.task, self.language, self.language_probability = "transcribe", None, None

    @property
    def language_text(self) -> str:
        """'Chinese 97% → English' (detected, translated), 'German' (given), '' before the first window."""
        if not self.language:
            return "→ English" if self.task == "translate" else ""
        text = languages.name(self.language)
        if self.language_probability is not None:
            text += f" {self.language_probability:.0%}"
        return text + (" → English" if self.task == "translate" else "")

    @property
    def status_text(self) -> str:
        if self.status is Status.ERROR:
            return f"Error: {self.error}" if self.error else "Error"
        if self.status is Status.LOADING and self.stage:
            return self.stage
        if self.status is Status.DONE and self.saved:
            return "Done · saved"
        return self.status.value

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.segments).strip()
