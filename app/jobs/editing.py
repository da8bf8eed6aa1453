"""The user's corrections to finished transcripts, with undo and redo per job.

Each edit is a QUndoCommand holding the transcript before and after it (transcripts are
immutable values, so a command is two references); the controller applies a transcript,
which re-saves the job's exports and its history record. One QUndoStack per job, grouped so
the window's Undo/Redo act on the job on screen.
"""
from __future__ import annotations

from dataclasses import replace

from PySide6.QtCore import QObject
from PySide6.QtGui import QUndoCommand, QUndoGroup, QUndoStack

from app.jobs.job import Job, Status
from engine import editing
from engine.results import Segment, Transcript


class _SetTranscript(QUndoCommand):
    def __init__(self, editor: "TranscriptEditor", job: Job, before: Transcript, after: Transcript, text: str):
        super().__init__(text)
        self._editor, self._job, self._before, self._after = editor, job, before, after

    def redo(self) -> None:
        self._editor.controller.apply_edit(self._job, self._after)

    def undo(self) -> None:
        self._editor.controller.apply_edit(self._job, self._before)


class TranscriptEditor(QObject):
    def __init__(self, controller, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.group = QUndoGroup(self)
        self._stacks: dict[int, QUndoStack] = {}

    @staticmethod
    def editable(job: Job | None) -> bool:
        """Only a finished transcript is edited: a running job's text is still being replaced by the worker."""
        return job is not None and job.status is Status.DONE and job.transcript is not None

    def activate(self, job: Job | None) -> None:
        """Undo/Redo now act on `job` (the one on screen)."""
        self.group.setActiveStack(self._stack(job) if self.editable(job) else None)

    def edit_segment(self, job: Job, segment: Segment, text: str) -> bool:
        """Correct one segment's text; False when nothing changed or the segment is no longer there."""
        if not self.editable(job):
            return False
        before = job.transcript
        try:
            index = before.segments.index(segment)
        except ValueError:
            return False
        edited = editing.edit_segment(segment, text)
        if edited == segment:
            return False
        segments = list(before.segments)
        segments[index] = edited
        after = replace(before, segments=segments)
        self._stack(job).push(_SetTranscript(self, job, before, after, f"correction at {segment.start:.1f} s"))
        return True

    def replace_all(self, job: Job, find: str, replacement: str) -> int:
        """Replace every (case-insensitive) occurrence in the job's transcript as one undoable step."""
        if not self.editable(job):
            return 0
        before = job.transcript
        after, count = editing.replace_all(before, find, replacement)
        if count:
            self._stack(job).push(_SetTranscript(self, job, before, after, f"replace “{find}” ({count})"))
        return count

    def forget(self, job: Job) -> None:
        stack = self._stacks.pop(job.id, None)
        if stack is not None:
            self.group.removeStack(stack)
            stack.deleteLater()

    def _stack(self, job: Job) -> QUndoStack:
        if job.id not in self._stacks:
            stack = QUndoStack(self)
            self.group.addStack(stack)
            self._stacks[job.id] = stack
        return self._stacks[job.id]
