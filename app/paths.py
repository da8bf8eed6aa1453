"""Where the app's bundled files are.

Looked up in order: PyInstaller's `sys._MEIPASS/assets`, the source checkout's `assets/`,
then `app/resources/` (flat copies as package data, for a wheel install: pyproject already
declares `app = ["resources/*"]`; the files are not copied there yet).
"""
from __future__ import annotations

import sys
from pathlib import Path

SAMPLE_NAME = "jfk_inaugural_excerpt.flac"
ICON_SIZES = (16, 32, 48, 64, 128, 256, 512)
_HERE = Path(__file__).resolve().parent


def _asset_roots() -> list[Path]:
    roots = []
    frozen = getattr(sys, "_MEIPASS", None)
    if frozen:
        roots += [Path(frozen) / "assets", Path(frozen)]
    roots.append(_HERE.parent / "assets")
    return roots


def _first(candidates: list[Path]) -> Path | None:
    return next((p for p in candidates if p.is_file()), None)


def sample_recording() -> Path | None:
    """The short sample recording used by the first run and `--self-test`."""
    return _first([r / "samples" / SAMPLE_NAME for r in _asset_roots()] + [_HERE / "resources" / SAMPLE_NAME])


def icon_files() -> list[Path]:
    """The app icon: the scalable SVG plus the PNG sizes, from the first place that has them."""
    for root in _asset_roots():
        svg = root / "icons" / "whisper-mla.svg"
        if svg.is_file():
            pngs = [root / "icons" / "hicolor" / f"{n}x{n}" / "apps" / "whisper-mla.png" for n in ICON_SIZES]
            return [svg] + [p for p in pngs if p.is_file()]
    res = _HERE / "resources"
    return [p for p in [res / "whisper-mla.svg"] + [res / f"whisper-mla-{n}.png" for n in ICON_SIZES] if p.is_file()]
