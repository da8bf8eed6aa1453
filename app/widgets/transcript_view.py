"""The selected job's transcript: timestamped segments that grow live, search, copy, click to play."""
from __future__ import annotations

import bisect
import html

from PySide6.QtCore import Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QColor, QGuiApplication, QTextCharFormat, QTextCursor, QTextDocument
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QLineEdit, QPushButton, QTextBrowser, QTextEdit, QVBoxLayout,
                               QWidget)

from app import formatting as fmt
from app.widgets.elided_label import ElidedLabel
from engine.results import Segment

MATCH = QColor(255, 222, 89)
CURRENT = QColor(255, 150, 50)


class TranscriptView(QWidget):
    segmentClicked = Signal(float)  # start second of the clicked segment

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
        self.browser = QTextBrowser()
        self.browser.setOpenLinks(False)
        self.browser.setAccessibleName("Transcript")
        self.browser.setPlaceholderText("Select a job to see its transcript. Drop recordings on the left to start.")
        self.browser.anchorClicked.connect(self._anchor)
        self.browser.document().setDocumentMargin(10)

        top = QHBoxLayout()
        top.addWidget(self.title, 1)
        top.addWidget(self.search)
        top.addWidget(self.matches_label)
        top.addWidget(self.copy_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.browser, 1)

        self._segments: list[Segment] = []
        self._matches: list[QTextCursor] = []
        self._current = -1
        self._rehighlight = QTimer(self)
        self._rehighlight.setSingleShot(True)
        self._rehighlight.setInterval(150)
        self._rehighlight.timeout.connect(self._highlight)
        self.search.textChanged.connect(lambda _t: self._highlight())
        self.search.returnPressed.connect(self.next_match)
        self.copy_button.clicked.connect(self.copy)

    # -- content -------------------------------------------------------------------------------
    def show_segments(self, title: str, segments: list[Segment]) -> None:
        self.title.set_full_text(title)
        self._segments = []
        self.browser.clear()
        for seg in segments:
            self.append(seg, rehighlight=False)
        self._highlight()

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
                f'title="Play from {stamp}">[{stamp}]</a>&nbsp;&nbsp;{html.escape(seg.text.strip())}')
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
        for i, cursor in enumerate(self._matches):
            sel = QTextEdit.ExtraSelection()
            sel.cursor = cursor
            f = QTextCharFormat()
            f.setBackground(CURRENT if i == self._current else MATCH)
            f.setForeground(QColor(0, 0, 0))
            sel.format = f
            selections.append(sel)
        self.browser.setExtraSelections(selections)

    def focus_search(self) -> None:
        self.search.setFocus(Qt.FocusReason.ShortcutFocusReason)
        self.search.selectAll()

    # -- playback ------------------------------------------------------------------------------
    def _anchor(self, url: QUrl) -> None:
        text = url.toString()
        if text.startswith("seg:"):
            try:
                self.segmentClicked.emit(float(text[4:]))
            except ValueError:
                pass
