"""A target for dropped files and folders that also opens the file dialog when clicked."""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QMouseEvent
from PySide6.QtWidgets import QFrame, QLabel, QVBoxLayout


def local_paths(event: QDropEvent | QDragEnterEvent) -> list[str]:
    """Local file/folder paths carried by a drag (URLs that are not local files are ignored)."""
    mime = event.mimeData()
    if mime is None or not mime.hasUrls():
        return []
    return [u.toLocalFile() for u in mime.urls() if u.isLocalFile() and u.toLocalFile()]


class DropZone(QFrame):
    pathsDropped = Signal(list)  # list[str]: files and folders
    clicked = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setAcceptDrops(True)
        self.setObjectName("dropZone")
        self.setAccessibleName("Drop zone: drop audio or video files or folders to transcribe them")
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setMinimumHeight(96)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        title = QLabel("<b>Drop recordings here</b>")
        hint = QLabel("audio or video files, or whole folders<br>or click to choose (Ctrl+O)")
        for label in (title, hint):
            label.setAlignment(Qt.AlignmentFlag.AlignCenter)
            label.setWordWrap(True)
        hint.setEnabled(False)  # muted text in any palette
        layout = QVBoxLayout(self)
        layout.addStretch(1)
        layout.addWidget(title)
        layout.addWidget(hint)
        layout.addStretch(1)
        self._set_active(False)

    def _set_active(self, active: bool) -> None:
        style = "solid" if active else "dashed"
        self.setStyleSheet(f"#dropZone {{ border: 2px {style} palette(highlight); border-radius: 8px; }}")

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if local_paths(event):
            event.acceptProposedAction()
            self._set_active(True)
        else:
            event.ignore()

    def dragMoveEvent(self, event) -> None:
        event.acceptProposedAction()

    def dragLeaveEvent(self, event) -> None:
        self._set_active(False)

    def dropEvent(self, event: QDropEvent) -> None:
        self._set_active(False)
        paths = local_paths(event)
        if paths:
            event.acceptProposedAction()
            self.pathsDropped.emit(paths)
        else:
            event.ignore()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton and self.rect().contains(event.position().toPoint()):
            self.clicked.emit()
        super().mouseReleaseEvent(event)
