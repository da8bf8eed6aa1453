"""Where the app's bundled files are.

Looked up in order: PyInstaller's `sys._MEIPASS/assets`, the source checkout's `assets/`,
then `app/resources/` (flat copies made by setup.py's build step, for a wheel install). The
sample recording is the engine's (`engine.sample_audio`).
"""
from __future__ import annotations

import sys
from pathlib import Path

ICON_SIZES = (16, 32, 48, 64, 128, 256, 512)
_HERE = Path(__file__).resolve().parent


def _asset_roots() -> list[Path]:
    roots = []
    frozen = getattr(sys, "_MEIPASS", None)
    if frozen:
        roots += [Path(frozen) / "assets", Path(frozen)]
    roots.append(_HERE.parent / "assets")
    return roots


def sample_recording() -> Path | None:
    """The short sample recording used by the first run and `--self-test`."""
    from engine.sample_audio import sample_recording as engine_sample

    return engine_sample()


def icon_files() -> list[Path]:
    """The app icon: the scalable SVG plus the PNG sizes, from the first place that has them."""
    for root in _asset_roots():
        svg = root / "icons" / "whisper-mla.svg"
        if svg.is_file():
            pngs = [root / "icons" / "hicolor" / f"{n}x{n}" / "apps" / "whisper-mla.png" for n in ICON_SIZES]
            return [svg] + [p for p in pngs if p.is_file()]
    res = _HERE / "resources"
    return [p for p in [res / "whisper-mla.svg"] + [res / f"whisper-mla-{n}.png" for n in ICON_SIZES] if p.is_file()]
