"""Which files count as recordings: audio and video containers, named directly or found in folders.

One rule for the app's drag-and-drop and for every command that takes audio (transcribe,
convert --calibrate, finetune --audio), so a folder means the same thing everywhere.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

AUDIO_EXTENSIONS = frozenset({
    ".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".wma", ".aiff", ".aif",
    ".caf", ".w64", ".amr", ".ac3", ".mka",
})
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mkv", ".webm", ".mov", ".avi", ".wmv", ".flv", ".mpg", ".mpeg", ".ts"})
MEDIA_EXTENSIONS = AUDIO_EXTENSIONS | VIDEO_EXTENSIONS


class MediaInputError(ValueError):
    """A path given as input names no recording: a folder without media, or a file that is not there."""


def is_media(path: Path) -> bool:
    return path.suffix.lower() in MEDIA_EXTENSIONS


def media_in_folder(folder: Path) -> list[Path]:
    """Media files under `folder`, recursively, in sorted order; hidden files and folders skipped."""
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(root) / name for name in sorted(files) if not name.startswith(".") and is_media(Path(name)))
    return found


def expand(paths: Iterable[str | os.PathLike], *, require_media: bool = False,
           on_empty: Callable[[MediaInputError], None] | None = None) -> list[Path]:
    """Files as given (any extension: the user chose them) plus media files found in folders.

    Duplicates are removed, keeping the first position. Paths that do not exist are kept as
    given, so the caller reports them by name. `require_media`: a folder with no media file
    raises `MediaInputError` naming it (a command line asked for its recordings), or, with
    `on_empty`, is handed to it as that error and the other paths are still expanded;
    otherwise it adds nothing (a drop of mixed folders).
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
            found = media_in_folder(p)
            if not found and require_media:
                e = MediaInputError(f"{p}: no audio or video files in this folder "
                                    f"(looked for {', '.join(sorted(AUDIO_EXTENSIONS))} and video containers)")
                if on_empty is None:
                    raise e
                on_empty(e)
            for f in found:
                add(f)
        else:
            add(p)
    return out


def recordings(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """`expand` for a command that needs every named recording (calibration, fine-tuning audio).

    Raises `MediaInputError` naming the first folder without media or file that does not exist.
    """
    found = expand(paths, require_media=True)
    for p in found:
        if not p.is_file():
            raise MediaInputError(f"{p}: audio file not found")
    return found
