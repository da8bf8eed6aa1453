"""Correcting a finished transcript in the window: inline edit, undo/redo, replace all, kept across a restart."""
from __future__ import annotations

import json

from PySide6.QtCore import QPoint, Qt

from app.jobs.job import Status
from gui_helpers import SAMPLE, wait_finished


def saved_texts(folder) -> dict[str, str]:
    return {p.suffix: p.read_text(encoding="utf-8") for p in folder.iterdir() if p.stem == SAMPLE.stem}


def double_click_segment(qtbot, view, row: int) -> None:
    """A real double-click on the middle of segment `row` in the transcript's viewport."""
    block = view.browser.document().findBlockByNumber(row)
    rect = view.browser.document().documentLayout().blockBoundingRect(block).toRect()
    y = rect.center().y() - view.browser.verticalScrollBar().value()
    qtbot.mouseDClick(view.browser.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(rect.left() + 120, y))


def test_correct_undo_redo_replace_and_restart(qtbot, make_window, settings):
    window = make_window()
    window.show()
    qtbot.waitExposed(window)
    view = window.transcript
    [job] = window.add_paths([SAMPLE])
    assert not view.editable  # nothing to correct while it is still being transcribed
    wait_finished(qtbot, job)
    assert job.status is Status.DONE
    qtbot.waitUntil(lambda: view.editable, timeout=5_000)
    out = settings.output_dir
    first = job.transcript.segments[0]
    original = first.text.strip()
    assert "Americans" in original

    # double-click the first segment, retype it, Enter
    double_click_segment(qtbot, view, 0)
    assert view.editor.isVisible() and view.editor.text() == original
    view.editor.selectAll()
    qtbot.keyClicks(view.editor, original.replace("Americans", "citizens"))
    qtbot.keyClick(view.editor, Qt.Key.Key_Return)
    assert not view.editor.isVisible()
    seg = job.transcript.segments[0]
    assert seg.edited and "citizens" in seg.text and seg.start == first.start
    assert [w.start for w in seg.words if "citizens" not in w.word] == \
        [w.start for w in first.words if "Americans" not in w.word]  # the other words keep their times
    assert "citizens" in view.browser.toPlainText()
    files = saved_texts(out)
    assert set(files) == {".txt", ".srt", ".vtt", ".json"}
    assert all("citizens" in t and "Americans" not in t for t in files.values())  # every export has it

    # Escape drops an edit
    double_click_segment(qtbot, view, 0)
    qtbot.keyClicks(view.editor, " nonsense")
    qtbot.keyClick(view.editor, Qt.Key.Key_Escape)
    assert "nonsense" not in job.text

    # undo and redo (the window's Edit menu actions)
    assert window.undo_action.isEnabled()
    window.undo_action.trigger()
    assert "Americans" in job.text and all("Americans" in t for t in saved_texts(out).values())
    window.redo_action.trigger()
    assert "citizens" in job.text

    # find and replace in this transcript
    view.search.setText("country")
    assert view.match_count == 2
    view.replace_with.setText("nation")
    qtbot.mouseClick(view.replace_button, Qt.MouseButton.LeftButton)
    assert job.text.count("nation") == 2 and "country" not in job.text
    assert window.statusBar().currentMessage().startswith("Replaced 2 matches")
    saved = json.loads((out / f"{SAMPLE.stem}.json").read_text(encoding="utf-8"))
    assert "nation" in saved["text"] and "citizens" in saved["text"]
    corrected = job.text
    window.close()

    # a restart: the job is back, finished, with the corrections, and its exports have them
    again = make_window(settings=settings)
    qtbot.waitUntil(lambda: len(again.jobs.jobs) == 1, timeout=5_000)
    [back] = again.jobs.jobs
    assert back.status is Status.DONE and back.text == corrected and back.name == SAMPLE.name
    again.job_panel.select(back)
    assert "nation" in again.transcript.browser.toPlainText() and again.transcript.editable
    exported = again.controller.export(back, ["srt"], out / "later")
    assert "citizens" in exported[0].read_text(encoding="utf-8")
    # removing it from the list forgets it (its files stay)
    again.controller.remove(back)
    assert list(settings.history_dir.glob("*.json")) == []
    assert (out / f"{SAMPLE.stem}.txt").is_file()
