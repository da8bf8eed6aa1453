"""Helpers shared by the benchmark scripts in bench/.

* where the evaluation audio lives (`../shared/audio` next to the repository, resolved from this
  file, never from the current directory) and how to read its references;
* word error rate (the engine's own `engine.wer`, i.e. Whisper's English normaliser + jiwer);
* timing helpers (median of repeated runs);
* the machine description printed at the top of every benchmark, so numbers quoted in the
  README always travel with the machine and library versions that produced them.

Importing this module puts the repository root on `sys.path`, so `python bench/<script>.py`
works from any directory without installing the project.
"""
from __future__ import annotations

import csv
import datetime as _dt
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DEFAULT_AUDIO_DIR = REPO_ROOT.parent / "shared" / "audio"

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# LibriSpeech utterance ids are speaker-chapter-utterance; the chapter has 4 to 6 digits here
# (e.g. 3080-5032-0000 next to 1089-134686-0000), so the digit counts are not fixed.
UTTERANCE_RE = re.compile(r"^\d+-\d+-\d+\.(flac|wav)$")
LONGFORM_FILES = {
    "librispeech_long": "longform_librispeech_concat.flac",
    "ljspeech_long": "longform_ljspeech_LJ001-0001_to_0032.flac",
}

T = TypeVar("T")


# -- audio and references ------------------------------------------------------------------------
def resolve_audio_dir(arg: str | os.PathLike | None) -> Path:
    """`None` -> the default shared folder; a relative path is taken relative to the repo root."""
    if arg is None:
        path = DEFAULT_AUDIO_DIR
    else:
        path = Path(arg).expanduser()
        if not path.is_absolute():
            path = REPO_ROOT / path
    path = path.resolve()
    if not path.is_dir():
        raise SystemExit(f"audio folder not found: {path}")
    return path


def reference_text(audio: Path) -> str:
    """The same-stem .txt reference of an audio file, whitespace collapsed."""
    ref = audio.with_suffix(".txt")
    if not ref.is_file():
        raise SystemExit(f"no reference transcript for {audio.name} (expected {ref.name})")
    return " ".join(ref.read_text(encoding="utf-8").split())


def librispeech_utterances(audio_dir: Path, limit: int | None = None) -> list[Path]:
    """The LibriSpeech utterance files (with a reference), sorted by id."""
    files = sorted(p for p in audio_dir.iterdir() if UTTERANCE_RE.match(p.name) and p.with_suffix(".txt").is_file())
    return files[:limit] if limit else files


@dataclass(frozen=True)
class RefSpan:
    """One reference utterance inside a long-form file."""

    id: str
    start: float
    end: float
    text: str


def load_segments_tsv(path: Path) -> list[RefSpan]:
    """`<stem>.segments.tsv`: header then id, start_s, end_s, text (tab separated)."""
    spans = []
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader, None)  # header (utterance_id / clip_id, start_s, end_s, text)
        for row in reader:
            if len(row) >= 4 and row[0].strip():
                spans.append(RefSpan(row[0], float(row[1]), float(row[2]), row[3]))
    return spans


# -- word error rate ------------------------------------------------------------------------------
def wer(references: Sequence[str], hypotheses: Sequence[str]):
    """Corpus WER (engine.wer.WerResult) with Whisper's English normaliser on both sides."""
    from engine.wer import word_error_rate

    return word_error_rate(list(references), list(hypotheses))


def normalize(text: str) -> str:
    from engine.wer import normalize as _norm

    return _norm(text)


def pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}"


# -- timing ---------------------------------------------------------------------------------------
def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """(result, wall seconds) of one call."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def median(xs: Iterable[float]) -> float:
    xs = list(xs)
    return statistics.median(xs) if xs else float("nan")


# -- machine description --------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / (1 << 20)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git_rev() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        rev = out.stdout.strip() if out.returncode == 0 else "no commit"
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev + (" (+uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_description(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What produced the numbers: CPU, cores, memory, load, library versions, date."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "n/a"
    mem = _mem_total_gib()
    desc: dict[str, Any] = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cores": f"{os.cpu_count()} logical, {affinity} usable by this process",
        "memory": f"{mem:.1f} GiB" if mem else "unknown",
        "load average (1/5/15 min)": load,
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "ctranslate2": _version("ctranslate2"),
        "faster-whisper": _version("faster-whisper"),
        "jiwer": _version("jiwer"),
        "repository": _git_rev(),
    }
    try:
        import torch

        desc["torch threads"] = torch.get_num_threads()
    except ImportError:
        pass
    desc.update(extra or {})
    return desc


def print_machine(desc: dict[str, Any], title: str = "Machine") -> None:
    print(f"== {title} ==")
    width = max(len(k) for k in desc)
    for k, v in desc.items():
        print(f"  {k:<{width}}  {v}")
    print()


# -- output ---------------------------------------------------------------------------------------
def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A plain-text table (also valid Markdown); `align` is one of l/r per column (default: l then r)."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    align = align or ("l" + "r" * (len(headers) - 1))

    def line(row: Sequence[str]) -> str:
        parts = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align)]
        return "| " + " | ".join(parts) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if a == "r" else ("-" * (w + 2)) for w, a in zip(widths, align)) + "|"
    return "\n".join([line(cells[0]), sep, *(line(r) for r in cells[1:])])
