"""Shared fixtures: the real bundled Whisper tiny.en, real audio shipped in the repo.

The model cache goes to a per-session temp folder (WHISPER_MLA_CACHE) so every test run also
exercises the CTranslate2 import once, exactly as a first run on a user's machine does.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "audio"
SAMPLE = REPO / "assets" / "samples" / "jfk_inaugural_excerpt.flac"
SHARED_AUDIO = REPO.parent / "shared" / "audio"

_cache = os.environ.get("WHISPER_MLA_TEST_CACHE") or tempfile.mkdtemp(prefix="whisper-mla-test-cache-")
os.environ["WHISPER_MLA_CACHE"] = _cache
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def reference(audio: Path) -> str:
    return audio.with_suffix(".txt").read_text(encoding="utf-8").strip()


@pytest.fixture(scope="session")
def tiny():
    """The bundled tiny.en model, loaded once per session on CPU."""
    from engine.model_sources import resolve_model

    return resolve_model(None, device="cpu")


@pytest.fixture(scope="session")
def sample_path() -> Path:
    return SAMPLE


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA
