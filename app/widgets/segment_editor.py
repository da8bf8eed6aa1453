"""The inline editor that opens over a segment of the transcript to correct its text.

Enter (or clicking elsewhere) keeps the correction, Escape drops it: the way a spreadsheet
cell or a file name in a file manager is edited.
"""
from __future__ import annotations

from PySide6.QtCore import QRect, Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QLineEdit, QWidget

from engine.results import Segment


class SegmentEditor(QLineEdit):
    committed = Signal(object, str)  # the segment as it was, its corrected text

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self.setAccessibleName("Correct segment")
        self.setToolTip("Enter keeps the correction, Escape drops it")
        self._segment: Segment | None = None
        self.editingFinished.connect(self._commit)
        self.hide()

    @property
    def segment(self) -> Segment | None:
        """The segment being corrected; None when the editor is closed."""
        return self._segment

    def open(self, segment: Segment, rect: QRect) -> None:
        self._segment = segment
        self.setText(segment.text.strip())
        grow = max(0, self.sizeHint().height() - rect.height())  # over the segment, half a line above and below
        self.setGeometry(rect.adjusted(0, -grow // 2, 0, grow - grow // 2))
        self.show()
        self.raise_()
        self.setFocus(Qt.FocusReason.OtherFocusReason)
        self.setCursorPosition(len(self.text()))

    def cancel(self) -> None:
        self._segment = None
        self.hide()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Escape:
            self.cancel()
            return
        super().keyPressEvent(event)

    def _commit(self) -> None:
        segment, self._segment = self._segment, None
        if segment is None:
            return
        self.hide()
        if " ".join(self.text().split()) != segment.text.strip():
            self.committed.emit(segment, self.text())
