"""Crash-safe file writes and an up-front check that an output folder is usable.

`atomic_write_bytes` writes to a temporary file in the destination folder, flushes and
fsyncs it, then `os.replace`s it onto the final name (atomic on POSIX and Windows when both
names are on the same volume, which a same-folder temp file guarantees). A crash or an
exception at any point leaves either the old file or the complete new one under the final
name, never a half-written file, and the temporary file is removed on failure.
`replace_dir` does the same for a whole folder (a model, a checkpoint) and refuses to
replace a folder that is not one of ours.
"""
from __future__ import annotations

import errno as _errno
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Union

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

# Temporary files are hidden and easy to recognise should a hard crash (power loss) strand one.
TEMP_PREFIX = ".whisper-mla-"
TEMP_SUFFIX = ".tmp"

_DEFAULT_MODE = 0o644


class OutputDirError(OSError):
    """The output folder cannot be created or written to; the message says which and why."""

    def __init__(self, message: str, path: PathLike | None = None, errno: int | None = None) -> None:
        super().__init__(errno if errno is not None else _errno.EACCES, message)
        self.message = message
        self.path = None if path is None else Path(path)

    def __str__(self) -> str:
        return self.message


def _fsync_dir(directory: Path) -> None:
    """Flush a directory entry to disk where the platform allows it (not on Windows)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(directory, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def _target_mode(path: Path) -> int:
    """Keep the permissions of the file being replaced; new files get rw-r--r--."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return _DEFAULT_MODE


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically; return the final path.

    The parent folder must exist. On any failure the temporary file is removed and the
    exception propagates; whatever was at `path` before is untouched.
    """
    final = Path(path)
    directory = final.parent if str(final.parent) else Path(".")
    tmp_name: str | None = None
    try:
        with tempfile.NamedTemporaryFile(
            mode="wb", dir=directory, prefix=TEMP_PREFIX + final.name + ".", suffix=TEMP_SUFFIX, delete=False
        ) as tmp:
            tmp_name = tmp.name
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        try:
            os.chmod(tmp_name, _target_mode(final))
        except OSError:  # e.g. filesystems without permissions; the content is what matters
            pass
        os.replace(tmp_name, final)
        tmp_name = None
    except BaseException:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                log.warning("could not remove temporary file %s", tmp_name)
        raise
    _fsync_dir(directory)
    log.debug("wrote %s (%d bytes)", final, len(data))
    return final


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically; newlines are written exactly as given (no translation)."""
    return atomic_write_bytes(path, text.encode(encoding))


def check_writable_dir(path: PathLike) -> None:
    """Create `path` if needed and prove a file can be written there.

    Raises `OutputDirError` (an `OSError`) with a message fit to show the user when the
    folder cannot be created, is not a folder, or does not accept new files.
    """
    directory = Path(path)
    if directory.exists() and not directory.is_dir():
        raise OutputDirError(
            f"Output folder {directory} is not a folder (a file of that name exists)", directory, _errno.ENOTDIR
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if isinstance(exc, (NotADirectoryError, FileExistsError)):
            reason = "part of the path is a file, not a folder"
        raise OutputDirError(
            f"Cannot create output folder {directory}: {reason}", directory, exc.errno
        ) from exc
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=TEMP_PREFIX + "write-test.", suffix=TEMP_SUFFIX):
            pass
    except OSError as exc:
        raise OutputDirError(
            f"Cannot write to output folder {directory}: {exc.strerror or exc}", directory, exc.errno
        ) from exc


def check_replaceable_dir(final: PathLike, may_replace: Callable[[Path], bool], what: str) -> None:
    """Refuse, before any work, an output folder that holds something `may_replace` does not recognise.

    A missing or empty folder is fine; a folder of ours (`may_replace`) is replaced whole,
    later, by `replace_dir`; anything else belongs to the user and is never deleted.
    """
    path = Path(final)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise OutputDirError(f"{path}: exists and is not a folder; choose a new folder for the {what}",
                             path, _errno.ENOTDIR)
    if not path.exists() or may_replace(path):
        return
    try:
        empty = next(path.iterdir(), None) is None
    except OSError as exc:
        raise OutputDirError(f"{path}: cannot be read ({exc.strerror or exc})", path, exc.errno) from exc
    if not empty:
        raise OutputDirError(f"{path}: the folder is not empty and is not a {what}; nothing in it was touched. "
                             f"Choose a new or empty folder", path, _errno.ENOTEMPTY)


_OWNER = ".writer-pid"  # inside a folder being built: the process building it


def temp_dir_beside(final: PathLike) -> Path:
    """A new hidden folder beside `final` to build it in (then `replace_dir`).

    Folders that a killed run (kill -9, power loss) left beside `final` are dealt with first:
    a half-built one whose writer is gone is removed; the previous folder that was renamed
    aside in the instant before the new one went in is put back when `final` is missing.
    """
    dst = Path(final)
    dst.parent.mkdir(parents=True, exist_ok=True)
    sweep_abandoned(dst)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{dst.name}.new.", dir=dst.parent))
    (tmp / _OWNER).write_text(str(os.getpid()), encoding="ascii")
    return tmp


def sweep_abandoned(final: PathLike) -> None:
    """Remove the half-built folders of dead writers beside `final`; restore an old one set aside."""
    import glob

    dst = Path(final)
    for p in sorted(dst.parent.glob(f"{TEMP_PREFIX}{glob.escape(dst.name)}.*")):
        if not p.is_dir():
            continue
        if p.name.startswith(f"{TEMP_PREFIX}{dst.name}.old."):
            if not dst.exists():
                log.warning("%s: putting back the previous folder that an interrupted write set aside", dst)
                os.rename(p, dst)
            else:
                shutil.rmtree(p, ignore_errors=True)
        elif not _writer_alive(p):
            log.info("removing %s, left half-written by an interrupted run", p)
            shutil.rmtree(p, ignore_errors=True)


def _writer_alive(folder: Path) -> bool:
    try:
        pid = int((folder / _OWNER).read_text(encoding="ascii"))
    except (OSError, ValueError):
        return False  # no owner: its writer was already moving it into place when it died
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def replace_dir(tmp: PathLike, final: PathLike, may_replace: Callable[[Path], bool], what: str) -> Path:
    """Put the complete folder `tmp` at `final`; an old folder of ours stays until the new one is in place.

    `final` must pass `check_replaceable_dir` (checked again here: the folder may have
    changed while the new one was written). The old folder is renamed aside, the new one
    renamed in, then the old one removed; if the second rename fails the old one is put
    back, so `final` always names a complete folder or nothing.
    """
    new, dst = Path(tmp), Path(final)
    check_replaceable_dir(dst, may_replace, what)
    (new / _OWNER).unlink(missing_ok=True)
    old: Path | None = None
    if dst.exists():
        old = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{dst.name}.old.", dir=dst.parent))
        os.rmdir(old)
        os.rename(dst, old)
    try:
        os.rename(new, dst)
    except BaseException:
        if old is not None:
            os.rename(old, dst)
        raise
    _fsync_dir(dst.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return dst
