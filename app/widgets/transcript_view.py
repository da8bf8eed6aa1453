"""The selected job's transcript: timestamped segments that grow live, search, copy, click to play.

With word timings, every word is a link to its own second, the word being played is
highlighted, and (toggle) words the model was unsure of are tinted. A finished transcript is
corrected in place: double-click a segment (or F2), or replace every match of the search.
"""
from __future__ import annotations

import bisect
import html

from PySide6.QtCore import QEvent, QObject, QPoint, QRect, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QColor, QGuiApplication, QKeySequence, QShortcut, QTextCharFormat, QTextCursor, QTextDocument
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QLineEdit, QPushButton, QTextBrowser, QTextEdit, QVBoxLayout,
                               QWidget)

from app import formatting as fmt
from app.widgets.elided_label import ElidedLabel
from app.widgets.segment_editor import SegmentEditor
from engine.results import Segment

MATCH = QColor(255, 222, 89)
CURRENT = QColor(255, 150, 50)
PLAYING = QColor(120, 190, 255)
UNSURE = QColor(255, 190, 190)
UNSURE_BELOW = 0.5  # word probability under which a word is tinted


def word_spans(seg: Segment) -> list[tuple[int, int]] | None:
    """(offset, length) of each word's visible characters in the segment's shown text (its text,
    stripped), or None when the words do not spell the text."""
    joined = "".join(w.word for w in seg.words)
    if not seg.words or joined.strip() != seg.text.strip():
        return None
    spans, offset = [], -(len(joined) - len(joined.lstrip()))
    for w in seg.words:
        lead = len(w.word) - len(w.word.lstrip())
        spans.append((max(0, offset + lead), len(w.word.strip())))
        offset += len(w.word)
    return spans


class TranscriptView(QWidget):
    segmentClicked = Signal(float)  # the second to play from: the clicked segment's or word's start
    segmentEdited = Signal(object, str)  # the segment as it was, the user's corrected text
    replaceRequested = Signal(str, str)  # find (the search text), replace with

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.title = ElidedLabel("Transcript", Qt.TextElideMode.ElideRight)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search transcript (Ctrl+F)")
        self.search.setClearButtonEnabled(True)
        self.search.setAccessibleName("Search transcript")
        self.search.setMaximumWidth(320)
        self.matches_label = QLabel("")
        self.matches_label.setMinimumWidth(90)
        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip("Copy the selected text, or the whole transcript")
        self.copy_button.setAccessibleName("Copy transcript")
        self.unsure_button = QPushButton("Unsure words")
        self.unsure_button.setCheckable(True)
        self.unsure_button.setToolTip(f"Tint the words the model gave less than {UNSURE_BELOW:.0%} probability "
                                      "(needs word timings)")
        self.unsure_button.setAccessibleName("Tint unsure words")
        self.browser = QTextBrowser()
        self.browser.setOpenLinks(False)
        self.browser.setAccessibleName("Transcript")
        self.browser.setPlaceholderText("Select a job to see its transcript. Drop recordings on the left to start.")
        self.browser.anchorClicked.connect(self._anchor)
        self.browser.document().setDocumentMargin(10)
        self.browser.viewport().installEventFilter(self)
        self.editor = SegmentEditor(self.browser.viewport())
        self.editor.committed.connect(self.segmentEdited)
        self.replace_with = QLineEdit()
        self.replace_with.setPlaceholderText("Replace with")
        self.replace_with.setAccessibleName("Replace with")
        self.replace_with.setMaximumWidth(220)
        self.replace_button = QPushButton("Replace all")
        self.replace_button.setToolTip("Replace every match of the search in this transcript (undo: Ctrl+Z)")
        self.replace_button.setAccessibleName("Replace all matches")
        self.edit_hint = QLabel("Double-click a segment (or F2) to correct it")
        self.edit_hint.setEnabled(False)

        top = QHBoxLayout()
        top.addWidget(self.title, 1)
        top.addWidget(self.search)
        top.addWidget(self.matches_label)
        top.addWidget(self.unsure_button)
        top.addWidget(self.copy_button)
        self.edit_row = QWidget()
        edit_row = QHBoxLayout(self.edit_row)
        edit_row.setContentsMargins(0, 0, 0, 0)
        edit_row.addWidget(self.edit_hint, 1)
        edit_row.addWidget(self.replace_with)
        edit_row.addWidget(self.replace_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.edit_row)
        layout.addWidget(self.browser, 1)
        self._editable = False
        self.edit_row.hide()

        self._segments: list[Segment] = []
        self._matches: list[QTextCursor] = []
        self._current = -1
        self._playing: tuple[int, int] | None = None  # (segment row, word index) under the playhead
        self._rehighlight = QTimer(self)
        self._rehighlight.setSingleShot(True)
        self._rehighlight.setInterval(150)
        self._rehighlight.timeout.connect(self._highlight)
        self.search.textChanged.connect(lambda _t: self._highlight())
        self.search.returnPressed.connect(self.next_match)
        self.copy_button.clicked.connect(self.copy)
        self.unsure_button.toggled.connect(lambda _on: self._paint())
        self.replace_button.clicked.connect(self._replace_all)
        self.replace_with.returnPressed.connect(self._replace_all)
        edit_key = QShortcut(QKeySequence(Qt.Key.Key_F2), self.browser)
        edit_key.setContext(Qt.ShortcutContext.WidgetShortcut)
        edit_key.activated.connect(lambda: self.edit_segment(self.browser.textCursor().blockNumber()))

    # -- content -------------------------------------------------------------------------------
    def show_segments(self, title: str, segments: list[Segment], keep_place: bool = False) -> None:
        """Show a job's transcript; `keep_place` (after a correction) keeps the scroll position."""
        self.editor.cancel()
        bar = self.browser.verticalScrollBar()
        place = bar.value()
        self.title.set_full_text(title)
        self._segments = []
        self._playing = None
        self.browser.clear()
        for seg in segments:
            self.append(seg, rehighlight=False)
        self._highlight()
        if keep_place:
            bar.setValue(place)

    # -- corrections ---------------------------------------------------------------------------
    def set_editable(self, editable: bool) -> None:
        """Finished transcripts can be corrected; a running one cannot (the worker still writes it)."""
        self._editable = editable
        self.edit_row.setVisible(editable)
        if not editable:
            self.editor.cancel()

    @property
    def editable(self) -> bool:
        return self._editable

    def edit_segment(self, row: int) -> bool:
        """Open the inline editor over segment `row`; False when not editable or no such row."""
        block = self.browser.document().findBlockByNumber(row)
        if not self._editable or not 0 <= row < len(self._segments) or not block.isValid():
            return False
        cursor = QTextCursor(block)
        self.browser.setTextCursor(cursor)
        self.browser.ensureCursorVisible()
        rect = self.browser.document().documentLayout().blockBoundingRect(block).toRect()
        offset = QPoint(self.browser.horizontalScrollBar().value(), self.browser.verticalScrollBar().value())
        self.editor.open(self._segments[row], QRect(rect.topLeft() - offset, rect.size()))
        return True

    def row_at(self, pos: QPoint) -> int:
        """The segment row under a point of the viewport."""
        return self.browser.cursorForPosition(pos).blockNumber()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.browser.viewport() and event.type() == QEvent.Type.MouseButtonDblClick and self._editable:
            if self.edit_segment(self.row_at(event.position().toPoint())):
                return True
        return super().eventFilter(watched, event)

    def _replace_all(self) -> None:
        if self._editable and self.search.text():
            self.replaceRequested.emit(self.search.text(), self.replace_with.text())

    def set_title(self, title: str) -> None:
        self.title.set_full_text(title)

    def append(self, seg: Segment, rehighlight: bool = True) -> None:
        """Add a segment in its place in time: batched decoding and the speech check deliver out of order."""
        bar = self.browser.verticalScrollBar()
        at_end = bar.value() >= bar.maximum() - 4
        row = bisect.bisect_right([s.start for s in self._segments], seg.start)
        self._segments.insert(row, seg)
        link = QColor(self.palette().color(self.palette().ColorRole.Link)).name()
        stamp = fmt.timestamp(seg.start)
        line = (f'<a href="seg:{seg.start:.3f}" style="color:{link}; text-decoration:none;" '
                f'title="Play from {stamp}">[{stamp}]</a>&nbsp;&nbsp;{self._text_html(seg)}')
        if row == len(self._segments) - 1:
            self.browser.append(line)
        else:  # before the block of the segment that follows it
            cursor = QTextCursor(self.browser.document().findBlockByNumber(row))
            cursor.insertBlock()
            cursor.movePosition(QTextCursor.MoveOperation.PreviousBlock)
            cursor.insertHtml(line)
        if at_end:
            bar.setValue(bar.maximum())
        if rehighlight and self.search.text():
            self._rehighlight.start()

    def _text_html(self, seg: Segment) -> str:
        """The segment's text; with word timings each word a link to its start, the text unchanged."""
        if word_spans(seg) is None:
            return html.escape(seg.text.strip())
        color = QColor(self.palette().color(self.palette().ColorRole.Text)).name()
        parts = []
        for k, w in enumerate(seg.words):
            space = "" if k == 0 else w.word[: len(w.word) - len(w.word.lstrip())]
            parts.append(f'{html.escape(space)}<a href="w:{w.start:.3f}" style="color:{color}; text-decoration:none;" '
                         f'title="{fmt.timestamp(w.start)}, {w.probability:.0%} sure">{html.escape(w.word.strip())}</a>')
        return "".join(parts)

    def word_cursor(self, row: int, index: int) -> QTextCursor | None:
        """A cursor selecting word `index` of segment `row` in the document."""
        seg = self._segments[row]
        spans = word_spans(seg)
        block = self.browser.document().findBlockByNumber(row)
        if spans is None or not block.isValid():
            return None
        offset, length = spans[index]
        start = block.position() + len(f"[{fmt.timestamp(seg.start)}]") + 2  # the stamp and two no-break spaces
        cursor = QTextCursor(self.browser.document())
        cursor.setPosition(start + offset)
        cursor.setPosition(start + offset + length, QTextCursor.MoveMode.KeepAnchor)
        return cursor

    def set_playhead(self, seconds: float) -> None:
        """Highlight the word being played (the last word started at `seconds`), if words are timed."""
        playing = None
        row = bisect.bisect_right([s.start for s in self._segments], seconds) - 1
        if row >= 0 and self._segments[row].words and seconds <= self._segments[row].end + 0.5:
            starts = [w.start for w in self._segments[row].words]
            playing = (row, max(0, bisect.bisect_right(starts, seconds) - 1))
        if playing != self._playing:
            self._playing = playing
            self._paint()

    @property
    def playing_word(self) -> str | None:
        if self._playing is None:
            return None
        row, index = self._playing
        return self._segments[row].words[index].word.strip()

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    def plain_text(self) -> str:
        return "\n".join(s.text.strip() for s in self._segments)

    def copy(self) -> None:
        cursor = self.browser.textCursor()
        text = cursor.selectedText().replace("\u2029", "\n") if cursor.hasSelection() else self.plain_text()
        QGuiApplication.clipboard().setText(text)

    # -- search --------------------------------------------------------------------------------
    @property
    def match_count(self) -> int:
        return len(self._matches)

    def _highlight(self) -> None:
        needle = self.search.text()
        self._matches = []
        doc = self.browser.document()
        if needle:
            cursor = QTextCursor(doc)
            while True:
                cursor = doc.find(needle, cursor, QTextDocument.FindFlag(0))
                if cursor.isNull():
                    break
                self._matches.append(QTextCursor(cursor))
        self._current = min(self._current, len(self._matches) - 1) if self._matches else -1
        self._paint()
        if not needle:
            self.matches_label.setText("")
        else:
            n = len(self._matches)
            self.matches_label.setText("no matches" if n == 0 else f"{n} match{'es' if n != 1 else ''}")

    def next_match(self) -> None:
        if not self._matches:
            return
        self._current = (self._current + 1) % len(self._matches)
        self._paint()
        cursor = QTextCursor(self._matches[self._current])
        cursor.clearSelection()
        self.browser.setTextCursor(cursor)
        self.browser.ensureCursorVisible()

    def _paint(self) -> None:
        selections = []
        if self.unsure_button.isChecked():
            for row, seg in enumerate(self._segments):
                for index, w in enumerate(seg.words):
                    if w.probability < UNSURE_BELOW:
                        selections.append(self._selection(self.word_cursor(row, index), UNSURE))
        if self._playing is not None:
            selections.append(self._selection(self.word_cursor(*self._playing), PLAYING))
        selections = [s for s in selections if s is not None]
        for i, cursor in enumerate(self._matches):
            sel = QTextEdit.ExtraSelection()
            sel.cursor = cursor
            f = QTextCharFormat()
            f.setBackground(CURRENT if i == self._current else MATCH)
            f.setForeground(QColor(0, 0, 0))
            sel.format = f
            selections.append(sel)
        self.browser.setExtraSelections(selections)

    @staticmethod
    def _selection(cursor: QTextCursor | None, color: QColor):
        if cursor is None:
            return None
        sel = QTextEdit.ExtraSelection()
        sel.cursor = cursor
        f = QTextCharFormat()
        f.setBackground(color)
        f.setForeground(QColor(0, 0, 0))
        sel.format = f
        return sel

    def unsure_count(self) -> int:
        return sum(1 for s in self._segments for w in s.words if w.probability < UNSURE_BELOW)

    def focus_search(self) -> None:
        self.search.setFocus(Qt.FocusReason.ShortcutFocusReason)
        self.search.selectAll()

    # -- playback ------------------------------------------------------------------------------
    def _anchor(self, url: QUrl) -> None:
        text = url.toString()
        kind, _, value = text.partition(":")
        if kind in ("seg", "w"):
            try:
                self.segmentClicked.emit(float(value))
            except ValueError:
                pass
