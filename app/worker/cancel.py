"""Cancellation that crosses the process boundary.

The GUI writes the id of the job to cancel into a shared integer; the engine's CancelToken
(checked before every 30 s window) reads it. Keyed by job id, so a late cancel for a job that
already finished can never stop the next one.
"""
from __future__ import annotations

from engine.transcribe import CancelToken

NO_JOB = -1


class SharedCancel(CancelToken):
    """A CancelToken that is also cancelled when the shared value names its job."""

    def __init__(self, shared, job: int):
        super().__init__()
        self._shared = shared
        self._job = job

    @property
    def cancelled(self) -> bool:  # type: ignore[override]
        if not self._event.is_set() and self._shared.value == self._job:
            self._event.set()
        return self._event.is_set()
