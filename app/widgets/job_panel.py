"""The queue: a table of jobs plus the buttons that act on the selected ones."""
from __future__ import annotations

from PySide6.QtCore import QItemSelectionModel, Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import QAbstractItemView, QHBoxLayout, QHeaderView, QPushButton, QTableView, QVBoxLayout, QWidget

from app.jobs.job import Job
from app.jobs.table_model import COLUMNS, DURATION, ETA, FILE, LANGUAGE, MODEL, PROGRESS, STATUS, JobTableModel
from app.widgets.progress_delegate import ProgressDelegate


class JobPanel(QWidget):
    selectionChanged = Signal(object)  # the current Job or None
    cancelRequested = Signal(list)  # list[Job]
    retryRequested = Signal(list)
    removeRequested = Signal(list)
    moveRequested = Signal(object, int)  # Job, -1 up / +1 down

    def __init__(self, model: JobTableModel, parent=None) -> None:
        super().__init__(parent)
        self.model = model
        self.table = QTableView()
        self.table.setModel(model)
        self.table.setAccessibleName("Job queue")
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().hide()
        self.table.setShowGrid(False)
        self.table.setWordWrap(False)
        self.table.setItemDelegateForColumn(PROGRESS, ProgressDelegate(self.table))
        header = self.table.horizontalHeader()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(FILE, QHeaderView.ResizeMode.Stretch)
        for col, width in ((DURATION, 80), (STATUS, 150), (PROGRESS, 110), (ETA, 70), (LANGUAGE, 150), (MODEL, 220)):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.Interactive)
            header.resizeSection(col, width)
        self.table.selectionModel().currentRowChanged.connect(lambda *_: self._emit_current())
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._update_buttons())
        model.dataChanged.connect(lambda *_: self._update_buttons())
        model.rowsInserted.connect(self._select_first_if_none)

        self.buttons: dict[str, QPushButton] = {}
        row = QHBoxLayout()
        for key, text, tip in (
            ("cancel", "Cancel", "Stop the selected jobs"),
            ("retry", "Retry", "Queue the selected finished jobs again"),
            ("remove", "Remove", "Remove the selected jobs from the list (Delete)"),
            ("up", "Move up", "Run earlier"),
            ("down", "Move down", "Run later"),
        ):
            b = QPushButton(text)
            b.setToolTip(tip)
            b.setAccessibleName(f"{text} job")
            b.clicked.connect(lambda _=False, k=key: self._act(k))
            self.buttons[key] = b
            row.addWidget(b)
        row.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.table, 1)
        layout.addLayout(row)
        delete = QShortcut(QKeySequence(QKeySequence.StandardKey.Delete), self.table)
        delete.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        delete.activated.connect(lambda: self._act("remove"))
        self._update_buttons()

    # -- selection -----------------------------------------------------------------------------
    def selected_jobs(self) -> list[Job]:
        rows = sorted({i.row() for i in self.table.selectionModel().selectedRows()})
        return [j for j in (self.model.job(r) for r in rows) if j is not None]

    def current_job(self) -> Job | None:
        idx = self.table.currentIndex()
        return self.model.job(idx.row()) if idx.isValid() else None

    def select(self, job: Job) -> None:
        row = self.model.row_of(job)
        if row >= 0:
            flags = QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows
            self.table.selectionModel().setCurrentIndex(self.model.index(row, 0), flags)

    def _select_first_if_none(self, parent, first: int, last: int) -> None:
        if not self.table.currentIndex().isValid():
            job = self.model.job(first)
            if job is not None:
                self.select(job)

    def _emit_current(self) -> None:
        self.selectionChanged.emit(self.current_job())
        self._update_buttons()

    # -- actions -------------------------------------------------------------------------------
    def _act(self, key: str) -> None:
        jobs = self.selected_jobs()
        if not jobs:
            return
        if key == "cancel":
            self.cancelRequested.emit(jobs)
        elif key == "retry":
            self.retryRequested.emit(jobs)
        elif key == "remove":
            self.removeRequested.emit(jobs)
        elif key in ("up", "down"):
            job = jobs[0]
            self.moveRequested.emit(job, -1 if key == "up" else 1)
            self.select(job)

    def _update_buttons(self) -> None:
        jobs = self.selected_jobs()
        rows = [self.model.row_of(j) for j in jobs]
        self.buttons["cancel"].setEnabled(any(not j.status.finished for j in jobs))
        self.buttons["retry"].setEnabled(any(j.status.finished for j in jobs))
        self.buttons["remove"].setEnabled(bool(jobs))
        self.buttons["up"].setEnabled(len(jobs) == 1 and rows[0] > 0)
        self.buttons["down"].setEnabled(len(jobs) == 1 and rows[0] < self.model.rowCount() - 1)


__all__ = ["JobPanel", "COLUMNS"]
