"""A one-line background task indicator: what is happening, a busy bar, and Cancel."""
from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget


class TaskRow(QWidget):
    cancelRequested = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.bar = QProgressBar()
        self.bar.setRange(0, 0)  # busy until a task reports a fraction (conversion has stages only)
        self.bar.setTextVisible(False)
        self.bar.setMaximumHeight(10)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setAccessibleName("Cancel model task")
        self.cancel_button.clicked.connect(self.cancelRequested)
        row = QHBoxLayout()
        row.addWidget(self.bar, 1)
        row.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.label)
        layout.addLayout(row)
        self.hide()

    def start(self, text: str) -> None:
        self.label.setText(text)
        self.bar.setRange(0, 0)
        self.cancel_button.setEnabled(True)
        self.show()

    def set_text(self, text: str) -> None:
        self.label.setText(text)

    def set_fraction(self, fraction: float) -> None:
        """Switch the busy bar to a percentage once the task knows how far it is."""
        self.bar.setRange(0, 1000)
        self.bar.setValue(round(1000 * max(0.0, min(1.0, fraction))))

    def finish(self, text: str) -> None:
        """Show the outcome, stop the bar; stays visible until the next start or `hide()`."""
        self.label.setText(text)
        self.bar.setRange(0, 1)
        self.bar.setValue(1)
        self.cancel_button.setEnabled(False)
