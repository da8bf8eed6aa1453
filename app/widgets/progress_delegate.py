"""Draws the Progress column as a progress bar."""
from __future__ import annotations

from PySide6.QtWidgets import QApplication, QStyle, QStyledItemDelegate, QStyleOptionProgressBar

from app.jobs.table_model import ProgressRole


class ProgressDelegate(QStyledItemDelegate):
    def paint(self, painter, option, index) -> None:
        fraction = index.data(ProgressRole) or 0.0
        bar = QStyleOptionProgressBar()
        bar.rect = option.rect.adjusted(3, 4, -3, -4)
        bar.minimum, bar.maximum = 0, 1000
        bar.progress = int(round(1000 * fraction))
        bar.text = f"{100 * fraction:.0f}%"
        bar.textVisible = True
        bar.state = option.state | QStyle.StateFlag.State_Horizontal
        bar.palette = option.palette
        if option.state & QStyle.StateFlag.State_Selected:
            painter.fillRect(option.rect, option.palette.highlight())
        style = option.widget.style() if option.widget else QApplication.style()
        style.drawControl(QStyle.ControlElement.CE_ProgressBar, bar, painter, option.widget)
