"""Which files in an output folder this program may replace: only its own, unchanged since written.

Exports land next to files the user owns (a recording called `talk.txt`, a hand-corrected
`talk.srt`). Before a file is replaced, the ledger in the program's cache folder
(`outputs.json`: absolute path -> size and SHA-256 of what was last written there; nothing
is added to the user's folders) must show that the file on disk is exactly what an earlier
export wrote. Anything else is the user's and is refused unless they ask for `overwrite`;
an input recording is never replaced, whatever is asked.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Iterable

from engine.atomic import atomic_write_text
from engine.user_dirs import cache_dir

log = logging.getLogger(__name__)

LEDGER = "outputs.json"
_CHUNK = 1 << 20


class OverwriteRefused(OSError):
    """An export would replace a file that is not ours to replace; the message names it and says what to do."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(errno.EEXIST, f"{path} {reason}")
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return self.strerror


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def ledger_path() -> Path:
    return cache_dir() / LEDGER


def _key(path: Path) -> str:
    return str(path.absolute())


def _read() -> dict[str, list]:
    try:
        data = json.loads(ledger_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def written_by_us(path: Path, ledger: dict[str, list] | None = None) -> bool:
    """True when `path` holds exactly what an earlier export wrote there (size, then hash)."""
    entry = (ledger if ledger is not None else _read()).get(_key(path))
    if not (isinstance(entry, list) and len(entry) == 2):
        return False
    try:
        return path.stat().st_size == entry[0] and _digest(path) == entry[1]
    except OSError:
        return False


def check_replaceable(paths: Iterable[Path], *, inputs: Iterable[str | Path] = (), overwrite: bool = False) -> None:
    """Raise `OverwriteRefused` for the first path that exists and may not be replaced."""
    sources = [Path(p) for p in inputs]
    ledger: dict[str, list] | None = None
    for path in paths:
        if not path.exists() and not path.is_symlink():
            continue
        if any(_same_file(path, s) for s in sources):
            raise OverwriteRefused(path, "is the recording being transcribed: it is never replaced; "
                                         "choose another --out folder")
        if not path.is_file():
            raise OverwriteRefused(path, "exists and is not a regular file; choose another --out folder")
        if overwrite:
            continue
        ledger = _read() if ledger is None else ledger
        if not written_by_us(path, ledger):
            raise OverwriteRefused(path, "exists and was not written by whisper-mla (or was edited since); "
                                         "pass --overwrite to replace it, or choose another --out folder")


def record(paths: Iterable[Path]) -> None:
    """Note what was just written, so a later export may replace it while it stays unchanged."""
    ledger = _read()
    for f in paths:
        ledger[_key(f)] = [f.stat().st_size, _digest(f)]
    try:
        ledger_path().parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(ledger_path(), json.dumps(ledger, indent=0, sort_keys=True) + "\n")
    except OSError as e:  # the exports themselves are written; only a later replacement will ask again
        log.warning("could not update %s: %s", ledger_path(), e)
