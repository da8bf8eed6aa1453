"""A cancel flag any thread may set (a GUI button, a signal handler, another process's proxy).

Long loops (the transcriber's windows, the fine-tuner's steps) check `cancelled` at their
natural boundaries, so a cancel always leaves consistent state behind.
"""
from __future__ import annotations

import threading


class CancelToken:
    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()
