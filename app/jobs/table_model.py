"""The queue as a Qt table model: file, duration, status, progress, ETA, language, model/KV mode."""
from __future__ import annotations

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt, Signal

from app import formatting as fmt
from app import languages
from app.jobs.job import Job, Status

COLUMNS = ("File", "Duration", "Status", "Progress", "ETA", "Language", "Model / KV cache")
FILE, DURATION, STATUS, PROGRESS, ETA, LANGUAGE, MODEL = range(len(COLUMNS))
ProgressRole = Qt.ItemDataRole.UserRole + 1  # float 0..1 for the progress delegate
JobRole = Qt.ItemDataRole.UserRole + 2
_ROOT = QModelIndex()


class JobTableModel(QAbstractTableModel):
    jobsChanged = Signal()  # rows added, removed or moved

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._jobs: list[Job] = []

    # -- access -----------------------------------------------------------------------------
    @property
    def jobs(self) -> list[Job]:
        return list(self._jobs)

    def job(self, row: int) -> Job | None:
        return self._jobs[row] if 0 <= row < len(self._jobs) else None

    def find(self, job_id: int) -> Job | None:
        return next((j for j in self._jobs if j.id == job_id), None)

    def row_of(self, job: Job) -> int:
        return next((i for i, j in enumerate(self._jobs) if j is job), -1)

    def next_queued(self) -> Job | None:
        """The first queued job in table order; None while an earlier job is still being checked."""
        for j in self._jobs:
            if j.status is Status.QUEUED:
                return j
            if j.status is Status.CHECKING:
                return None
        return None

    # -- changes ----------------------------------------------------------------------------
    def add(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        n = len(self._jobs)
        self.beginInsertRows(QModelIndex(), n, n + len(jobs) - 1)
        self._jobs.extend(jobs)
        self.endInsertRows()
        self.jobsChanged.emit()

    def remove(self, job: Job) -> None:
        row = self.row_of(job)
        if row >= 0:
            self.beginRemoveRows(QModelIndex(), row, row)
            del self._jobs[row]
            self.endRemoveRows()
            self.jobsChanged.emit()

    def move(self, job: Job, delta: int) -> bool:
        """Move one row up (-1) or down (+1); False at the edges."""
        row = self.row_of(job)
        dest = row + delta
        if row < 0 or not 0 <= dest < len(self._jobs):
            return False
        # Qt's destination index is "insert before", so moving down skips one more row.
        if not self.beginMoveRows(QModelIndex(), row, row, QModelIndex(), dest + (1 if delta > 0 else 0)):
            return False
        self._jobs.insert(dest, self._jobs.pop(row))
        self.endMoveRows()
        self.jobsChanged.emit()
        return True

    def refresh(self, job: Job) -> None:
        row = self.row_of(job)
        if row >= 0:
            self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))

    # -- Qt model ---------------------------------------------------------------------------
    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = _ROOT) -> int:
        return 0 if parent.isValid() else len(self._jobs)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = _ROOT) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        job = self.job(index.row()) if index.isValid() else None
        if job is None:
            return None
        col = index.column()
        if role == JobRole:
            return job.id
        if role == ProgressRole:
            return job.fraction
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(job, col)
        if role == Qt.ItemDataRole.ToolTipRole:
            if col == FILE:
                return str(job.path)
            if col == STATUS and job.status is Status.ERROR:
                return job.error
            if col == STATUS and job.saved:
                return "Saved: " + ", ".join(p.name for p in job.saved)
            if col == LANGUAGE and job.language_probability is not None:
                return (f"Detected {languages.name(job.language)} with probability {job.language_probability:.0%}"
                        + (", translated to English" if job.task == "translate" else ""))
            return self._display(job, col)
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (DURATION, PROGRESS, ETA):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ForegroundRole and col == STATUS and job.status is Status.ERROR:
            from PySide6.QtGui import QColor

            return QColor(200, 40, 40)
        return None

    @staticmethod
    def _display(job: Job, col: int) -> str:
        if col == FILE:
            return job.name
        if col == DURATION:
            return fmt.duration(job.duration_s)
        if col == STATUS:
            return job.status_text
        if col == PROGRESS:
            return fmt.percent(job.fraction)
        if col == ETA:
            if job.status is Status.RUNNING:
                return fmt.duration(job.eta_s)
            return ""
        if col == LANGUAGE:
            return job.language_text
        if col == MODEL:
            return job.model_label
        return ""
