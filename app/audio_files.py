"""Which files the app accepts: audio and video containers, found in files and folders."""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

AUDIO_EXTENSIONS = frozenset({
    ".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".wma", ".aiff", ".aif",
    ".caf", ".w64", ".amr", ".ac3", ".mka",
})
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mkv", ".webm", ".mov", ".avi", ".wmv", ".flv", ".mpg", ".mpeg", ".ts"})
MEDIA_EXTENSIONS = AUDIO_EXTENSIONS | VIDEO_EXTENSIONS


def is_media(path: Path) -> bool:
    return path.suffix.lower() in MEDIA_EXTENSIONS


def dialog_filter() -> str:
    """Name filter for QFileDialog: media first, then everything."""
    pattern = " ".join(f"*{e}" for e in sorted(MEDIA_EXTENSIONS))
    return f"Audio and video ({pattern});;All files (*)"


def expand(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given (any extension: the user chose them) plus media files found in folders.

    Folders are walked recursively in sorted order, hidden entries skipped; duplicates removed
    while keeping the first position.
    """
    out: list[Path] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            out.append(p)

    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    f = Path(root) / name
                    if not name.startswith(".") and is_media(f):
                        add(f)
        elif p.is_file():
            add(p)
    return out
