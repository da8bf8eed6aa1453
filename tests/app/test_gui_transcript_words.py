"""Timed words in the transcript view: a click on a word plays from it, playback highlights the word
being said, unsure words can be tinted. Words from the real tiny.en on the repo's JFK clip."""
from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QTextCursor

from app.widgets.player import Player
from app.widgets.transcript_view import UNSURE_BELOW, TranscriptView
from engine.transcribe import Transcriber, TranscribeOptions
from tests.conftest import SAMPLE


@pytest.fixture(scope="module")
def segments(tiny):
    return Transcriber(tiny, TranscribeOptions(word_timestamps=True)).transcribe(SAMPLE).segments


@pytest.fixture
def view(qtbot, segments):
    v = TranscriptView()
    qtbot.addWidget(v)
    v.resize(700, 400)
    v.show()
    qtbot.waitExposed(v)
    v.show_segments(SAMPLE.name, segments)
    return v


def test_words_show_as_the_segment_text(view, segments):
    lines = view.browser.toPlainText().splitlines()
    assert [line.split("]", 1)[1].strip() for line in lines] == [s.text.strip() for s in segments]
    for row, seg in enumerate(segments):
        for index, w in enumerate(seg.words):
            assert view.word_cursor(row, index).selectedText() == w.word.strip()


def test_clicking_a_word_plays_the_recording_from_it(qtbot, view, segments):
    player = Player(view)
    if not player.available:
        pytest.fail(f"QtMultimedia must load here (it ships in PySide6-Addons): {player.reason}")
    view.segmentClicked.connect(lambda s: player.play(SAMPLE, s))
    row, index = 1, 2
    word = segments[row].words[index]
    inside = QTextCursor(view.browser.document())
    inside.setPosition(view.word_cursor(row, index).selectionStart() + 1)  # between its first two letters
    rect = view.browser.cursorRect(inside)
    with qtbot.waitSignal(view.segmentClicked, timeout=3000) as sig:
        qtbot.mouseClick(view.browser.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert sig.args[0] == pytest.approx(word.start, abs=1e-3)
    qtbot.waitUntil(lambda: player.requested_position_s() is not None, timeout=5000)
    assert player.requested_position_s() == pytest.approx(word.start, abs=0.05)
    player.stop()


def test_playback_highlights_the_word_being_said(view, segments):
    word = segments[0].words[3]
    view.set_playhead((word.start + word.end) / 2)
    assert view.playing_word == word.word.strip()
    sel = view.browser.extraSelections()
    assert len(sel) == 1 and sel[0].cursor.selectedText() == word.word.strip()
    view.set_playhead(segments[-1].end + 5)  # past the speech: nothing highlighted
    assert view.playing_word is None and not view.browser.extraSelections()


def test_unsure_words_are_tinted_only_when_asked(view, segments):
    unsure = [w for s in segments for w in s.words if w.probability < UNSURE_BELOW]
    assert view.unsure_count() == len(unsure)
    assert not view.browser.extraSelections()
    view.unsure_button.setChecked(True)
    assert sorted(s.cursor.selectedText() for s in view.browser.extraSelections()) == sorted(w.word.strip() for w in unsure)
    view.unsure_button.setChecked(False)
    assert not view.browser.extraSelections()
