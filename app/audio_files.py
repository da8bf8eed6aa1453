"""Which files the app accepts (the engine's rule, `engine.media_files`) and the file-dialog filter."""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from engine.media_files import AUDIO_EXTENSIONS, MEDIA_EXTENSIONS, VIDEO_EXTENSIONS, is_media
from engine.media_files import expand as _expand

__all__ = ["AUDIO_EXTENSIONS", "VIDEO_EXTENSIONS", "MEDIA_EXTENSIONS", "is_media", "dialog_filter", "expand"]


def dialog_filter() -> str:
    """Name filter for QFileDialog: media first, then everything."""
    pattern = " ".join(f"*{e}" for e in sorted(MEDIA_EXTENSIONS))
    return f"Audio and video ({pattern});;All files (*)"


def expand(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Dropped or chosen paths as queue entries: files as given, media found in folders, nothing that is gone."""
    return [p for p in _expand(paths) if p.is_file()]
