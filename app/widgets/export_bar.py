"""Export buttons (one per format, and all) and the output folder chooser."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QFileDialog, QHBoxLayout, QLabel, QPushButton, QWidget

from app.widgets.elided_label import ElidedLabel

from engine.export import FORMATS


class ExportBar(QWidget):
    exportRequested = Signal(tuple)  # formats
    outputDirChanged = Signal(Path)

    def __init__(self, output_dir: Path, parent=None) -> None:
        super().__init__(parent)
        self._dir = Path(output_dir)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("Export:"))
        self.format_buttons: dict[str, QPushButton] = {}
        for f in FORMATS:
            b = QPushButton(f.upper())
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
        layout.addSpacing(16)
        layout.addWidget(QLabel("Output folder:"))
        self.dir_label = ElidedLabel()
        self.dir_label.setAccessibleName("Output folder")
        layout.addWidget(self.dir_label, 1)
        self.choose_button = QPushButton("Choose…")
        self.choose_button.setAccessibleName("Choose output folder")
        self.choose_button.clicked.connect(self.choose)
        self.open_button = QPushButton("Open")
        self.open_button.setToolTip("Show the output folder in the file manager")
        self.open_button.setAccessibleName("Open output folder")
        self.open_button.clicked.connect(lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(self._dir))))
        layout.addWidget(self.choose_button)
        layout.addWidget(self.open_button)
        self._show_dir()
        self.set_export_enabled(False)

    @property
    def output_dir(self) -> Path:
        return self._dir

    def set_output_dir(self, path: Path) -> None:
        self._dir = Path(path)
        self._show_dir()
        self.outputDirChanged.emit(self._dir)

    def _show_dir(self) -> None:
        text = str(self._dir)
        self.dir_label.set_full_text(text, text + "\nFinished transcripts are saved here automatically.")

    def choose(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Output folder for transcripts", str(self._dir))
        if path:
            self.set_output_dir(Path(path))

    def set_export_enabled(self, enabled: bool) -> None:
        for b in (*self.format_buttons.values(), self.all_button):
            b.setEnabled(enabled)
