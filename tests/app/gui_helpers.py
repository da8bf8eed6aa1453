"""Constants and helpers shared by the GUI tests (a uniquely named module, importable from tests/app)."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "assets" / "samples" / "jfk_inaugural_excerpt.flac"
DATA = REPO / "tests" / "data" / "audio"
SHORT = DATA / "1089-134691-0000.flac"  # 2 s: "He could wait no longer."
TEN_S = DATA / "1089-134686-0000.flac"  # 10 s LibriSpeech utterance
JOB_TIMEOUT_MS = 120_000  # a 2-core machine shared with other work can be slow


def wait_finished(qtbot, job, timeout: int = JOB_TIMEOUT_MS) -> None:
    qtbot.waitUntil(lambda: job.status.finished, timeout=timeout)
