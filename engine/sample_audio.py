"""The short sample recording shipped with the product (JFK, 11 s, public domain).

It is the default MLA calibration audio, the app's first-run sample and what
`--self-test` transcribes. It lives in `assets/samples/` of a checkout (also inside a
PyInstaller bundle); a wheel carries a copy in `engine/data/` (see setup.py).
"""
from __future__ import annotations

import sys
from pathlib import Path

SAMPLE_NAME = "jfk_inaugural_excerpt.flac"
_ENGINE = Path(__file__).resolve().parent


def sample_candidates() -> list[Path]:
    roots = []
    frozen = getattr(sys, "_MEIPASS", None)
    if frozen:
        roots.append(Path(frozen) / "assets" / "samples")
    roots += [_ENGINE.parent / "assets" / "samples", _ENGINE / "data"]
    return [r / SAMPLE_NAME for r in roots]


def sample_recording() -> Path | None:
    """The first copy of the sample that exists, or None in a broken install."""
    return next((p for p in sample_candidates() if p.is_file()), None)
