"""A plain `pip install .` (a wheel, no checkout beside it) still has the files the code reads."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile

from tests.conftest import REPO

NEEDED = ["engine/data/jfk_inaugural_excerpt.flac", "engine/data/english_spelling.json",
          "app/resources/whisper-mla.svg", "app/resources/whisper-mla-256.png"]


def test_wheel_carries_the_sample_and_the_icon(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("engine", "app", "assets"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    # setuptools is in the test venv on Python <= 3.11; otherwise pip fetches it for an isolated build
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-w", str(tmp_path / "dist"),
                          str(src)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    [wheel] = (tmp_path / "dist").glob("whisper_mla-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [n for n in NEEDED if n not in names]
    assert not missing, f"wheel lacks {missing}"
    assert "engine/sample_audio.py" in names and "app/main.py" in names
    assert not any(n.startswith(("tests/", "bench/")) for n in names)
