"""Whisper-MLA desktop app (PySide6). Talks to `engine` only through its public API.

The GUI process never imports torch: every model operation runs in a worker process
(`app.worker`), which streams segments, progress and memory samples back as plain dicts.
"""
from __future__ import annotations

__all__ = ["APP_NAME", "ORG_NAME", "DESKTOP_ID"]

APP_NAME = "Whisper-MLA"
ORG_NAME = "whisper-mla"
DESKTOP_ID = "whisper-mla"
