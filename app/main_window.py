"""The main window: composes the widgets and wires them to the job controller and worker."""
from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QIcon, QKeySequence
from PySide6.QtWidgets import (QFileDialog, QFrame, QInputDialog, QMainWindow, QMessageBox, QSplitter, QStyle, QToolBar,
                               QVBoxLayout, QWidget)

from app import APP_NAME
from app.audio_files import dialog_filter
from app.jobs.controller import JobController, kv_label
from app.jobs.conversion import ConversionRunner
from app.jobs.editing import TranscriptEditor
from app.jobs.history import JobHistory
from app.jobs.job import Job
from app.jobs.table_model import JobTableModel
from app.settings import AppSettings
from app.widgets.drop_zone import DropZone, local_paths
from app.widgets.export_bar import ExportBar, OutputFolder
from app.widgets.job_panel import JobPanel
from app.widgets.memory_status import MemoryStatus
from app.widgets.model_panel import ModelPanel
from app.widgets.player import Player
from app.widgets.task_row import TaskRow
from app.widgets.transcript_view import TranscriptView
from app.worker import protocol as P
from app.worker.client import WorkerClient

log = logging.getLogger(__name__)
DEFAULT_SIZE = QSize(1200, 780)


class MainWindow(QMainWindow):
    def __init__(self, settings: AppSettings | None = None, worker: WorkerClient | None = None,
                 preload: bool = True) -> None:
        super().__init__()
        self.settings = settings or AppSettings()
        self.setWindowTitle(f"{APP_NAME} — transcribe long recordings with a smaller KV cache")
        self.setAcceptDrops(True)
        self._owns_worker = worker is None
        self.worker = worker or WorkerClient(self)
        self.jobs = JobTableModel(self)
        self.controller = JobController(self.jobs, self.worker, self.settings.output_dir, self.settings.models_dir,
                                        self, history=JobHistory(self.settings.history_dir))
        self.controller.choice = self.settings.model_choice
        self.editor = TranscriptEditor(self.controller, self)
        self.conversion = ConversionRunner(self.settings.models_dir, self)
        self._task_verb = "Converted"  # what the model task row reports when the running task finishes
        self.player = Player(self)
        self.compare_window = None
        self._build()
        self._connect()
        self._restore()
        self.controller.restore_history()
        if preload:
            self.controller.preload()

    # -- construction ----------------------------------------------------------------------------
    def _build(self) -> None:
        self.drop_zone = DropZone()
        self.model_panel = ModelPanel(self.controller.choice, self.settings.custom_models)
        self.task_row = TaskRow()
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 6, 0)
        left_layout.addWidget(self.drop_zone)
        left_layout.addWidget(self.model_panel)
        left_layout.addWidget(self.task_row)
        self.output_folder = OutputFolder(self.settings.output_dir)
        left_layout.addWidget(self.output_folder)
        left_layout.addStretch(1)
        left.setMinimumWidth(260)

        self.job_panel = JobPanel(self.jobs)
        self.transcript = TranscriptView()
        self.export_bar = ExportBar()
        bottom = QWidget()
        bottom_layout = QVBoxLayout(bottom)
        bottom_layout.setContentsMargins(0, 0, 0, 0)
        bottom_layout.addWidget(self.transcript, 1)
        bottom_layout.addWidget(self.export_bar)

        self.right_split = QSplitter(Qt.Orientation.Vertical)
        self.right_split.addWidget(self.job_panel)
        self.right_split.addWidget(bottom)
        self.right_split.setStretchFactor(0, 2)
        self.right_split.setStretchFactor(1, 3)
        self.right_split.setChildrenCollapsible(False)
        self.main_split = QSplitter(Qt.Orientation.Horizontal)
        self.main_split.addWidget(left)
        self.main_split.addWidget(self.right_split)
        self.main_split.setStretchFactor(1, 1)
        self.main_split.setChildrenCollapsible(False)
        self.main_split.setSizes([330, 870])
        self.right_split.setSizes([300, 420])
        container = QWidget()
        layout = QVBoxLayout(container)
        layout.setContentsMargins(8, 8, 8, 4)
        layout.addWidget(self.main_split)
        # the memory readout has its own strip: in the status bar it took the room that the
        # messages ("Added 3 files", "Wrote talk.srt") are drawn in, and they never showed (issue 22)
        self.memory_status = MemoryStatus()
        self.memory_status.set_choice(self.controller.choice)
        self.memory_status.setFrameShape(QFrame.Shape.StyledPanel)
        layout.addWidget(self.memory_status)
        self.setCentralWidget(container)
        self.statusBar().setAccessibleName("Messages")  # made now, so it is laid out before the first message
        self._build_actions()

    def _action(self, text: str, shortcut, slot, icon: QStyle.StandardPixmap | None = None, tip: str = "") -> QAction:
        a = QAction(text, self)
        if shortcut:
            a.setShortcut(QKeySequence(shortcut))
        if icon is not None:
            a.setIcon(self.style().standardIcon(icon))
        a.setToolTip(f"{tip or text} ({a.shortcut().toString(QKeySequence.SequenceFormat.NativeText)})"
                     if shortcut else tip or text)
        a.triggered.connect(slot)
        self.addAction(a)
        return a

    def _build_actions(self) -> None:
        sp = QStyle.StandardPixmap
        self.open_action = self._action("&Open files…", QKeySequence.StandardKey.Open, self.open_files,
                                        sp.SP_DialogOpenButton, "Add recordings to the queue")
        self.folder_action = self._action("Add &folder…", "Ctrl+Shift+O", self.open_folder, sp.SP_DirOpenIcon,
                                          "Add every recording in a folder")
        self.export_action = self._action("&Export all formats", "Ctrl+E", lambda: self.export_selected(None),
                                          sp.SP_DialogSaveButton, "Export the selected transcript in every format")
        self.find_action = self._action("&Find in transcript", QKeySequence.StandardKey.Find,
                                        self.transcript.focus_search)
        self.compare_action = self._action("&Compare stock vs MLA…", "Ctrl+Shift+C", self.open_compare,
                                           sp.SP_FileDialogContentsView,
                                           "Run the selected file through stock Whisper and Whisper-MLA and "
                                           "watch the memory")
        self.pause_action = self._action("&Pause queue", "Ctrl+P", lambda on: self.controller.set_paused(on),
                                         sp.SP_MediaPause, "Finish the running job but start no new one")
        self.pause_action.setCheckable(True)
        self.quit_action = self._action("&Quit", QKeySequence.StandardKey.Quit, self.close)
        self.quit_action.setMenuRole(QAction.MenuRole.QuitRole)
        if self.quit_action.shortcut().isEmpty():
            self.quit_action.setShortcut(QKeySequence("Ctrl+Q"))
        file_menu = self.menuBar().addMenu("&File")
        for a in (self.open_action, self.folder_action, None, self.export_action, None, self.pause_action, None,
                  self.quit_action):
            file_menu.addSeparator() if a is None else file_menu.addAction(a)
        self.undo_action = self.editor.group.createUndoAction(self, "&Undo")
        self.undo_action.setShortcut(QKeySequence.StandardKey.Undo)
        self.redo_action = self.editor.group.createRedoAction(self, "&Redo")
        self.redo_action.setShortcut(QKeySequence.StandardKey.Redo)
        for a in (self.undo_action, self.redo_action):
            self.addAction(a)
        edit_menu = self.menuBar().addMenu("&Edit")
        for a in (self.undo_action, self.redo_action, None, self.find_action):
            edit_menu.addSeparator() if a is None else edit_menu.addAction(a)
        self.menuBar().addMenu("&Tools").addAction(self.compare_action)
        help_menu = self.menuBar().addMenu("&Help")
        help_menu.addAction(QAction("&About", self, triggered=self.about))
        bar = QToolBar("Main")
        bar.setObjectName("mainToolbar")
        bar.setMovable(False)
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        bar.setIconSize(QSize(18, 18))
        for a in (self.open_action, self.folder_action, self.export_action, self.pause_action, self.compare_action):
            bar.addAction(a)
        self.addToolBar(bar)

    def _connect(self) -> None:
        c = self.controller
        self.drop_zone.pathsDropped.connect(self.add_paths)
        self.drop_zone.clicked.connect(self.open_files)
        self.job_panel.selectionChanged.connect(self._show_job)
        self.job_panel.cancelRequested.connect(lambda jobs: [c.cancel(j) for j in jobs])
        self.job_panel.retryRequested.connect(lambda jobs: self._drop_corrections(jobs, c.retry))
        self.job_panel.removeRequested.connect(lambda jobs: self._drop_corrections(jobs, c.remove))
        self.job_panel.moveRequested.connect(c.move)
        self.transcript.segmentClicked.connect(self._play_from)
        self.transcript.segmentEdited.connect(self._correct_segment)
        self.transcript.replaceRequested.connect(self._replace_all)
        c.transcriptEdited.connect(self._transcript_edited)
        self.player.positionChanged.connect(self.transcript.set_playhead)
        self.export_bar.exportRequested.connect(self.export_selected)
        self.output_folder.changed.connect(self._set_output_dir)
        self.model_panel.changed.connect(self._set_choice)
        self.model_panel.customModelsChanged.connect(lambda items: setattr(self.settings, "custom_models", items))
        self.model_panel.convertRequested.connect(self.start_conversion)
        self.model_panel.finetuneRequested.connect(self.ask_finetune)
        self.conversion.fraction.connect(self.task_row.set_fraction)
        self.task_row.cancelRequested.connect(self.conversion.cancel)
        self.conversion.stage.connect(self.task_row.set_text)
        self.conversion.finished.connect(self._converted)
        self.conversion.failed.connect(lambda text: self._conversion_over(f"Conversion failed: {text}"))
        self.conversion.cancelled.connect(lambda: self._conversion_over("Conversion cancelled"))
        c.segmentAdded.connect(self._segment_added)
        c.jobChanged.connect(self._job_changed)
        c.memorySample.connect(self.memory_status.set_sample)
        c.modelLoaded.connect(self._model_loaded)
        c.workerHello.connect(self._hello)
        c.notice.connect(lambda text: self.statusBar().showMessage(text, 8000))
        self.worker.event.connect(self._worker_stage)

    # -- files -----------------------------------------------------------------------------------
    def add_paths(self, paths) -> list[Job]:
        jobs = self.controller.add_paths(paths)
        if jobs:
            self.statusBar().showMessage(f"Added {len(jobs)} file{'s' if len(jobs) != 1 else ''}", 5000)
            if self.job_panel.current_job() is None:
                self.job_panel.select(jobs[0])
        else:
            self.statusBar().showMessage("No new audio or video files found there", 5000)
        return jobs

    def open_files(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Open recordings", self.settings.last_open_dir, dialog_filter())
        if files:
            self.settings.last_open_dir = str(Path(files[0]).parent)
            self.add_paths(files)

    def open_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add every recording in a folder", self.settings.last_open_dir)
        if folder:
            self.settings.last_open_dir = folder
            self.add_paths([folder])

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if local_paths(event):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        paths = local_paths(event)
        if paths:
            event.acceptProposedAction()
            self.add_paths(paths)

    # -- selected job ----------------------------------------------------------------------------
    def selected_job(self) -> Job | None:
        return self.job_panel.current_job()

    def _title(self, job: Job) -> str:
        n = len(job.segments)
        title = f"{job.name} — {job.status_text} — {n} segment{'s' if n != 1 else ''}"
        track = job.transcript.audio_track if job.transcript else None
        if track:  # a file with several audio tracks: which one this text is of, where the user looks
            title += f" — audio track {track.track} of {track.tracks}"
        return title

    def _show_job(self, job: Job | None, keep_place: bool = False) -> None:
        if job is None:
            self.transcript.show_segments("Transcript", [])
        else:
            self.transcript.show_segments(self._title(job), job.segments, keep_place=keep_place)
        self.transcript.set_editable(self.editor.editable(job))
        self.editor.activate(job)
        self.export_bar.set_export_enabled(job is not None and bool(job.segments))

    # -- corrections -----------------------------------------------------------------------------
    def _drop_corrections(self, jobs: list[Job], then) -> None:
        """Retry or remove: the jobs' undo history goes (it would put back a transcript that is gone)."""
        for job in jobs:
            self.editor.forget(job)
            then(job)

    def _correct_segment(self, segment, text: str) -> None:
        job = self.selected_job()
        if job is not None and self.editor.edit_segment(job, segment, text):
            self.statusBar().showMessage(f"Corrected the segment at {segment.start:.1f} s; saved "
                                         f"{', '.join(p.name for p in job.saved) or 'with the job'} (undo: Ctrl+Z)", 8000)

    def _replace_all(self, find: str, replacement: str) -> None:
        job = self.selected_job()
        count = self.editor.replace_all(job, find, replacement) if job is not None else 0
        self.statusBar().showMessage(f"Replaced {count} match{'es' if count != 1 else ''} of “{find}”" if count
                                     else f"No “{find}” to replace", 8000)

    def _transcript_edited(self, job_id: int) -> None:
        job = self.selected_job()
        if job is not None and job.id == job_id:
            self._show_job(job, keep_place=True)

    def _segment_added(self, job_id: int, seg) -> None:
        job = self.selected_job()
        if job is not None and job.id == job_id:
            self.transcript.append(seg)
            self.transcript.set_title(self._title(job))
            self.export_bar.set_export_enabled(True)

    def _job_changed(self, job_id: int) -> None:
        job = self.selected_job()
        if job is not None and job.id == job_id:
            if job.transcript is not None and len(job.transcript.segments) != self.transcript.segment_count:
                self._show_job(job)  # the final transcript replaces the live one
            elif self.transcript.editable != self.editor.editable(job):
                self._show_job(job, keep_place=True)  # finished (editable now) or queued again
            self.transcript.set_title(self._title(job))
            self.export_bar.set_export_enabled(bool(job.segments))

    def export_selected(self, formats) -> list[Path]:
        from engine.export import FORMATS
        from engine.output_ledger import OverwriteRefused

        job = self.selected_job()
        if job is None or not job.segments:
            self.statusBar().showMessage("Select a job with a transcript to export", 5000)
            return []
        try:
            try:
                paths = self.controller.export(job, formats or FORMATS)
            except OverwriteRefused as e:
                answer = QMessageBox.question(
                    self, "Replace file?", f"{e.path.name} already exists in {e.path.parent} and was not written "
                    f"by Whisper-MLA (or was edited since).\n\nReplace it?",
                    QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
                if answer != QMessageBox.StandardButton.Yes:
                    self.statusBar().showMessage(f"Not exported: {e.path.name} kept as it is", 8000)
                    return []
                paths = self.controller.export(job, formats or FORMATS, overwrite=True)
        except (OSError, ValueError) as e:
            QMessageBox.warning(self, "Export failed", str(e))
            return []
        self.statusBar().showMessage(f"Wrote {', '.join(p.name for p in paths)} to {paths[0].parent}", 8000)
        return paths

    def _play_from(self, start_s: float) -> None:
        job = self.selected_job()
        if job is None:
            return
        if not self.player.play(job.path, start_s):
            self.statusBar().showMessage(f"Cannot play: {self.player.reason}", 6000)

    # -- model -----------------------------------------------------------------------------------
    def _set_choice(self, choice) -> None:
        self.controller.choice = choice
        self.settings.model_choice = choice
        self.memory_status.set_choice(choice)

    def _set_output_dir(self, path: Path) -> None:
        self.controller.output_dir = path
        self.settings.output_dir = path

    def _hello(self, m: dict) -> None:
        gpu = m.get("gpu") or {}
        self.memory_status.set_gpu(gpu)
        self.model_panel.set_bundled_available(m.get("bundled") or {})
        self.model_panel.set_gpu_available(bool(gpu.get("available")), gpu.get("reason") or "")

    def _model_loaded(self, m: dict) -> None:
        info = m.get("info") or {}
        self.memory_status.set_loaded(kv_label(self.controller.choice.source_text(), info.get("kv_mode", "stock")),
                                      m.get("device", ""))

    def _worker_stage(self, m: dict) -> None:
        if m.get("type") == P.STAGE and m.get("job") is None:
            self.statusBar().showMessage(m.get("text", ""), 8000)

    def start_conversion(self, choice) -> None:
        if self.conversion.busy:
            return
        out = self.conversion.start(choice, calibration=self.queued_recordings())
        self._task_verb = "Converted"
        self.model_panel.set_converting(True)
        self.task_row.start(f"Converting {choice.source_text()} to MLA → {out.name}")

    def ask_finetune(self, model_dir: str) -> None:
        """Fine-tune the selected MLA model on the recordings in the queue, for a number of minutes."""
        audio = self.queued_recordings()
        if not audio:
            QMessageBox.information(self, "Fine-tune", "Add some of your recordings to the queue first: fine-tuning "
                                    "learns from them (no transcripts needed; stock Whisper is the teacher).")
            return
        from engine.finetune.budget import recommended_runs

        minutes, ok = QInputDialog.getInt(
            self, "Fine-tune on my recordings",
            f"Learn from {len(audio)} recording{'s' if len(audio) != 1 else ''} in the queue for how many minutes?\n"
            "Longer is better up to about 20 minutes on a CPU. From 10 minutes on, the time goes to several runs\n"
            "of 5 minutes or more whose results are averaged: steadier when the recordings are few.\n"
            "Cancel stops early and keeps the model so far.",
            10, 1, 240)
        if ok:
            self.start_finetune(model_dir, audio, {"minutes": float(minutes), "runs": recommended_runs(minutes)})

    def queued_recordings(self) -> list[Path]:
        """The queue's recordings that still exist, in queue order, without duplicates.

        Conversion calibrates on them and fine-tuning learns from them: the user's own audio.
        """
        seen: dict[Path, None] = {}
        for job in self.jobs.jobs:
            if job.path.is_file():
                seen.setdefault(job.path, None)
        return list(seen)

    def start_finetune(self, model_dir: str, audio: list[Path], options: dict) -> None:
        if self.conversion.busy:
            return
        out = self.conversion.start_finetune(model_dir, audio, options)
        self._task_verb = "Fine-tuned"
        self.model_panel.set_converting(True)
        self.task_row.start(f"Fine-tuning {Path(model_dir).name} on {len(audio)} recording"
                            f"{'s' if len(audio) != 1 else ''} → {out.name}")

    def _converted(self, folder: str, description: str) -> None:
        self._conversion_over(f"{self._task_verb}: {Path(folder).name} ({description}); it is now in the model list")
        self.model_panel.add_source(folder)

    def _conversion_over(self, text: str) -> None:
        self.model_panel.set_converting(False)
        self.task_row.finish(text)
        self.statusBar().showMessage(text, 8000)

    # -- comparison / about --------------------------------------------------------------------
    def open_compare(self) -> None:
        from app.compare.window import CompareWindow
        from app.paths import sample_recording

        job = self.selected_job()
        path = job.path if job is not None else sample_recording()
        if self.compare_window is None:
            self.compare_window = CompareWindow(self.settings, self)
        self.compare_window.set_file(path)
        self.compare_window.set_choice(self.model_panel.compare_choice())
        self.compare_window.show()
        self.compare_window.raise_()
        self.compare_window.activateWindow()

    def about(self) -> None:
        QMessageBox.about(self, f"About {APP_NAME}",
                          f"<h3>{APP_NAME}</h3><p>Transcribes long recordings with Whisper on your own CPU or GPU. "
                          "Whisper-MLA converts the decoder's attention to multi-head latent attention, so its "
                          "key/value cache is up to 87.5% smaller (arXiv 2603.00563).</p>")

    # -- state -----------------------------------------------------------------------------------
    def _restore(self) -> None:
        geometry = self.settings.state("geometry")
        if geometry is None or not self.restoreGeometry(geometry):
            self.resize(DEFAULT_SIZE)
        for name, splitter in (("main_split", self.main_split), ("right_split", self.right_split)):
            state = self.settings.state(name)
            if state is not None:
                splitter.restoreState(state)

    def save_state(self) -> None:
        self.settings.save_state("geometry", self.saveGeometry())
        self.settings.save_state("main_split", self.main_split.saveState())
        self.settings.save_state("right_split", self.right_split.saveState())
        self.settings.model_choice = self.model_panel.choice()
        self.settings.output_dir = self.output_folder.output_dir
        self.settings.sync()

    def confirm_quit(self, n_jobs: int) -> bool:
        """Ask before stopping running jobs (tests replace this)."""
        answer = QMessageBox.question(
            self, f"Quit {APP_NAME}?",
            f"{n_jobs} job{'s are' if n_jobs != 1 else ' is'} still running or queued. "
            "Stop transcribing and quit? Finished transcripts are already saved.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def closeEvent(self, event: QCloseEvent) -> None:
        pending = self.controller.pending
        if (pending or self.conversion.busy) and not self.confirm_quit(len(pending) + int(self.conversion.busy)):
            event.ignore()
            return
        self.save_state()
        if self.compare_window is not None:
            self.compare_window.close()
        self.player.stop()
        self.conversion.shutdown()
        if self._owns_worker:
            self.controller.shutdown()
        else:  # a shared worker (tests, embedding) keeps running; just stop our job
            for job in self.controller.running:
                self.worker.cancel(job.id)
            if self.controller.attached:
                self.worker.event.disconnect(self._worker_stage)
            self.controller.detach()
        event.accept()


def app_icon() -> QIcon:
    from app.paths import icon_files

    icon = QIcon()
    for f in icon_files():
        icon.addFile(str(f))
    return icon
