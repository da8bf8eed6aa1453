"""Export buttons (one per format, and all) and the output folder chooser."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (QFileDialog, QGroupBox, QHBoxLayout, QLabel, QPushButton, QToolButton, QVBoxLayout,
                               QWidget)

from app.widgets.elided_label import ElidedLabel

from engine.export import FORMATS


class ExportBar(QWidget):
    """Export buttons for the selected transcript (one per format, and all)."""

    exportRequested = Signal(tuple)  # formats

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("Export:"))
        self.format_buttons: dict[str, QToolButton] = {}
        for f in FORMATS:
            b = QToolButton()  # compact: four format buttons must fit a narrow window
            b.setText(f.upper())
            b.setMinimumWidth(48)
            b.setToolTip(f"Write the selected transcript as .{f} into the output folder")
            b.setAccessibleName(f"Export {f.upper()}")
            b.clicked.connect(lambda _=False, f=f: self.exportRequested.emit((f,)))
            self.format_buttons[f] = b
            layout.addWidget(b)
        self.all_button = QPushButton("Export all")
        self.all_button.setToolTip("Write TXT, SRT, VTT and JSON (Ctrl+E)")
        self.all_button.setAccessibleName("Export all formats")
        self.all_button.clicked.connect(lambda: self.exportRequested.emit(FORMATS))
        layout.addWidget(self.all_button)
        layout.addStretch(1)
        self.set_export_enabled(False)

    def set_export_enabled(self, enabled: bool) -> None:
        for b in (*self.format_buttons.values(), self.all_button):
            b.setEnabled(enabled)


class OutputFolder(QGroupBox):
    """Where transcripts go: finished jobs are saved here automatically, exports too."""

    changed = Signal(Path)

    def __init__(self, output_dir: Path, parent=None) -> None:
        super().__init__("Output folder", parent)
        self._dir = Path(output_dir)
        self.dir_label = ElidedLabel()
        self.dir_label.setAccessibleName("Output folder")
        self.choose_button = QPushButton("Choose…")
        self.choose_button.setAccessibleName("Choose output folder")
        self.choose_button.clicked.connect(self.choose)
        self.open_button = QPushButton("Open")
        self.open_button.setToolTip("Show the output folder in the file manager")
        self.open_button.setAccessibleName("Open output folder")
        self.open_button.clicked.connect(lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(self._dir))))
        note = QLabel("Finished transcripts are saved here at once (TXT, SRT, VTT, JSON).")
        note.setWordWrap(True)
        note.setEnabled(False)
        row = QHBoxLayout()
        row.addWidget(self.dir_label, 1)
        row.addWidget(self.choose_button)
        row.addWidget(self.open_button)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(note)
        self._show_dir()

    @property
    def output_dir(self) -> Path:
        return self._dir

    def set_output_dir(self, path: Path) -> None:
        self._dir = Path(path)
        self._show_dir()
        self.changed.emit(self._dir)

    def _show_dir(self) -> None:
        text = str(self._dir)
        self.dir_label.set_full_text(text, text + "\nFinished transcripts are saved here automatically.")

    def choose(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Output folder for transcripts", str(self._dir))
        if path:
            self.set_output_dir(Path(path))
