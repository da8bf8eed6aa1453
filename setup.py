"""Wheel builds copy the few repository assets the installed code reads into the packages.

`assets/` is the one source of truth (the PyInstaller spec and the Linux .desktop/metainfo
read it there); a source checkout or an editable install reads it in place. A wheel has
no `assets/` next to `engine/` and `app/`, so `build_py` copies the sample recording (the
default MLA calibration, the app's first-run sample and `--self-test`) into
`engine/data/` and the app icon into `app/resources/` of the build tree; nothing is
duplicated in git. All metadata lives in pyproject.toml.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
ICON_SIZES = (16, 32, 48, 64, 128, 256, 512)


def _copies() -> list[tuple[Path, str]]:
    """(source file, destination inside the build tree)."""
    out = [(ROOT / "assets" / "samples" / name, f"engine/data/{name}")
           for name in ("jfk_inaugural_excerpt.flac", "jfk_inaugural_excerpt.txt")]
    out.append((ROOT / "assets" / "icons" / "whisper-mla.svg", "app/resources/whisper-mla.svg"))
    for n in ICON_SIZES:
        out.append((ROOT / "assets" / "icons" / "hicolor" / f"{n}x{n}" / "apps" / "whisper-mla.png",
                    f"app/resources/whisper-mla-{n}.png"))
    return out


class BuildPyWithAssets(build_py):
    def run(self) -> None:
        super().run()
        for src, rel in _copies():
            if src.is_file():
                dst = Path(self.build_lib) / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)


setup(cmdclass={"build_py": BuildPyWithAssets})
