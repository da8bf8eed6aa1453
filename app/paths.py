"""Where the app's bundled files are: the repo/package tree, or PyInstaller's `sys._MEIPASS`."""
from __future__ import annotations

import sys
from pathlib import Path

SAMPLE_NAME = "jfk_inaugural_excerpt.flac"


def _roots() -> list[Path]:
    roots = []
    frozen = getattr(sys, "_MEIPASS", None)
    if frozen:
        roots.append(Path(frozen))
    here = Path(__file__).resolve().parent
    roots += [here / "resources", here.parent]  # package data, then the source checkout
    return roots


def asset(*parts: str) -> Path | None:
    """First existing `assets/<parts>` (or `<parts>` in package resources); None if missing."""
    for root in _roots():
        for base in (root / "assets", root):
            p = base.joinpath(*parts)
            if p.exists():
                return p
    return None


def sample_recording() -> Path | None:
    return asset("samples", SAMPLE_NAME)


def icon_files() -> list[Path]:
    """The app icon: the scalable SVG plus the hicolor PNG sizes, whatever is present."""
    out = []
    svg = asset("icons", "whisper-mla.svg")
    if svg:
        out.append(svg)
    for size in (16, 32, 48, 64, 128, 256, 512):
        png = asset("icons", "hicolor", f"{size}x{size}", "apps", "whisper-mla.png")
        if png:
            out.append(png)
    return out
