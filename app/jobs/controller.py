"""Runs the queue: probes new files, hands one job at a time to the worker, applies its events
to the jobs, and saves each finished transcript into the output folder at once."""
from __future__ import annotations

import bisect
import logging
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from app.audio_files import expand
from app.jobs.history import JobHistory
from app.jobs.job import Job, Status
from app.jobs.probe import Prober
from app.jobs.table_model import JobTableModel
from app.model_choice import ModelChoice
from app.worker import protocol as P
from app.worker.client import WorkerClient
from engine.export import FORMATS, export, transcript_from_dict, unique_stem
from engine.speech_coverage import describe_gaps
from engine.results import ModelInfo, Progress, Segment, Transcript

log = logging.getLogger(__name__)


def kv_label(source_text: str, kv_mode: str) -> str:
    """'tiny.en · compressed (8-bit)', 'tiny.en · stock', 'tiny.en · MLA decoder-self r=96 (87.5%)'."""
    if kv_mode.startswith("compressed (8-bit"):
        kv = "compressed (8-bit)"
    elif kv_mode.startswith("compressed"):
        kv = "compressed (exact)"
    else:
        kv = "stock" if kv_mode == "stock" else "MLA " + kv_mode.replace("mla ", "")
    return f"{source_text} · {kv}"


class JobController(QObject):
    segmentAdded = Signal(int, object)  # job id, engine.results.Segment
    jobChanged = Signal(int)  # status / progress of a job changed
    jobFinished = Signal(int)  # done, cancelled or failed
    memorySample = Signal(object)  # the worker's latest memory sample (MemorySample dict + kv_bytes)
    modelLoaded = Signal(object)  # {info: ModelInfo dict, device: str}
    workerHello = Signal(object)
    notice = Signal(str)  # one line for the status bar
    transcriptEdited = Signal(int)  # job id: the user's correction (or its undo) replaced the transcript

    def __init__(self, model: JobTableModel, worker: WorkerClient, output_dir: Path, models_dir: Path,
                 parent: QObject | None = None, history: JobHistory | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.worker = worker
        self.output_dir = Path(output_dir)
        self.models_dir = Path(models_dir)
        self.choice = ModelChoice()
        self.history = history
        self.autosave_formats: tuple[str, ...] = FORMATS
        self._paused = False
        self._detached = False
        self._stems: dict[Path, str] = {}
        self.prober = Prober(self)
        self.prober.done.connect(self._probed)
        worker.event.connect(self._on_event)
        worker.crashed.connect(self._on_crash)
        worker.hello.connect(self.workerHello)

    # -- queue operations ------------------------------------------------------------------------
    def add_paths(self, paths) -> list[Job]:
        """Queue files, and the media files inside folders; returns the new jobs."""
        known = {j.path.resolve() for j in self.model.jobs if not j.status.finished}
        jobs = [Job(p, model_label=self.choice.label()) for p in expand(paths) if p.resolve() not in known]
        self.model.add(jobs)
        for job in jobs:
            self.prober.probe(job.id, job.path)
        return jobs

    def restore_history(self) -> list[Job]:
        """Put the finished jobs of earlier sessions back in the list (oldest first), as they were left."""
        jobs = self.history.load() if self.history else []
        self.model.add(jobs)
        return jobs

    def apply_edit(self, job: Job, transcript: Transcript) -> None:
        """Make `transcript` the job's (an edit, or its undo): re-save its exports and its history record."""
        job.transcript = transcript
        job.segments = list(transcript.segments)
        self._resave(job)
        if self.history:
            self.history.save(job)
        self._changed(job)
        self.transcriptEdited.emit(job.id)

    def cancel(self, job: Job) -> None:
        if job.status in (Status.CHECKING, Status.QUEUED):
            self._finish(job, Status.CANCELLED)
        elif job.status.active and job.status is not Status.CANCELLING:
            job.status = Status.CANCELLING
            self._changed(job)
            self.worker.cancel(job.id)

    def retry(self, job: Job) -> None:
        if job.status.finished:
            job.reset(self.choice.label())
            if job.status is Status.CHECKING:
                self.prober.probe(job.id, job.path)
            self._changed(job)
            self.pump()

    def remove(self, job: Job) -> None:
        """Out of the list, and out of the history (its exported files stay where they are)."""
        if job.status.active:
            self.worker.cancel(job.id)
        if self.history:
            self.history.forget(job)
        self.model.remove(job)
        self.pump()

    def move(self, job: Job, delta: int) -> bool:
        return self.model.move(job, delta)

    @property
    def running(self) -> list[Job]:
        return [j for j in self.model.jobs if j.status.active]

    @property
    def pending(self) -> list[Job]:
        return [j for j in self.model.jobs if j.status in (Status.CHECKING, Status.QUEUED) or j.status.active]

    @property
    def paused(self) -> bool:
        return self._paused

    def set_paused(self, paused: bool) -> None:
        """A paused queue finishes the running job but starts no new one."""
        self._paused = paused
        self.pump()

    def pump(self) -> None:
        """Start the next queued job when the worker is free (and the queue is not paused)."""
        if self._paused or not self.worker.idle:
            return
        job = self.model.next_queued()
        if job is None:
            return
        job.status = Status.LOADING
        job.stage = "Starting"
        job.model_label = self.choice.label()
        job.task = self.choice.effective_task
        self._changed(job)
        self.worker.submit(P.msg(P.TRANSCRIBE, job.id, path=str(job.path), model=self.choice.to_dict(),
                                 models_dir=str(self.models_dir)))

    def preload(self) -> None:
        self.worker.preload(P.msg(P.PRELOAD, None, model=self.choice.to_dict(), models_dir=str(self.models_dir)))

    # -- export ----------------------------------------------------------------------------------
    def transcript_of(self, job: Job) -> Transcript | None:
        """The finished transcript, or the partial one of a cancelled / running job."""
        if job.transcript is not None:
            return job.transcript
        if not job.segments:
            return None
        info = ModelInfo(source=self.choice.source, name=self.choice.source_text(), multilingual=False)
        return Transcript(str(job.path), job.duration_s or 0.0, None, info, list(job.segments), complete=False)

    def export(self, job: Job, formats, out_dir: Path | None = None, *, overwrite: bool = False) -> list[Path]:
        """Write the job's transcript; raises `OverwriteRefused` rather than replace a file that is not ours."""
        transcript = self.transcript_of(job)
        if transcript is None:
            raise ValueError(f"{job.name} has no transcript yet")
        return export(transcript, out_dir or self.output_dir, formats, stem=self._stem(job), overwrite=overwrite)

    def _stem(self, job: Job) -> str:
        """The audio file's stem, made unique among this session's jobs (same name, other folder)."""
        key = job.path.resolve()
        if key not in self._stems:
            self._stems[key] = unique_stem(job.path, set(self._stems.values()))
        return self._stems[key]

    def _autosave(self, job: Job) -> None:
        try:
            job.saved = self.export(job, self.autosave_formats)
            self.notice.emit(f"Saved {job.name} transcript to {self.output_dir}")
        except (OSError, ValueError) as e:
            job.saved = []
            self.notice.emit(f"Could not save the transcript of {job.name}: {e}")

    def _resave(self, job: Job) -> None:
        """After an edit: rewrite each file the job was saved to, where it is; one the user changed stays as it is."""
        kept: list[Path] = []
        for path in job.saved:
            try:
                kept += export(self.transcript_of(job), path.parent, [path.suffix.lstrip(".")], stem=path.stem)
            except (OSError, ValueError) as e:
                self.notice.emit(f"{path.name} not updated with the correction: {e}")
        job.saved = kept

    # -- worker events ---------------------------------------------------------------------------
    def _probed(self, job_id: int, duration, error: str) -> None:
        job = self.model.find(job_id)
        if job is None or job.status is not Status.CHECKING:
            return
        if error:
            job.error = error
            self._finish(job, Status.ERROR)
            return
        job.duration_s = duration
        job.status = Status.QUEUED
        self._changed(job)
        self.pump()

    def _on_event(self, m: dict) -> None:
        kind = m.get("type")
        if kind == P.MEMORY:
            self._memory(m)
            return
        job = self.model.find(m["job"]) if m.get("job") is not None else None
        if kind == P.MODEL:
            self.modelLoaded.emit(m)
            if job is not None:
                job.model_label = kv_label(self.choice.source_text(), m["info"].get("kv_mode", "stock"))
                self._changed(job)
        elif kind == P.ERROR and job is None:
            self.notice.emit(m.get("message", "error"))
            self.pump()
        elif job is not None:
            self._job_event(job, kind, m)
        elif kind in P.FINAL:  # a removed job finished: the worker is free again
            self.pump()

    def _job_event(self, job: Job, kind: str, m: dict) -> None:
        if kind == P.STAGE:
            job.stage = m.get("text", "")
            if job.stage == "Transcribing" and job.status is Status.LOADING:
                job.status = Status.RUNNING
            self._changed(job)
        elif kind == P.SEGMENT:
            seg = Segment.from_dict(m["segment"])
            bisect.insort_right(job.segments, seg, key=lambda s: s.start)  # batched segments come out of order
            self.segmentAdded.emit(job.id, seg)
        elif kind == P.LANGUAGE:
            job.language, job.language_probability = m.get("language"), m.get("probability")
            job.task = m.get("task", job.task)
            self._changed(job)
        elif kind == P.PROGRESS:
            p = Progress(m["done_s"], m["total_s"], m["elapsed_s"])
            job.fraction, job.eta_s = p.fraction, p.eta_s
            if job.status is Status.LOADING:
                job.status = Status.RUNNING
            self._changed(job)
        elif kind == P.DONE:
            job.transcript = transcript_from_dict(m["transcript"])
            job.segments = list(job.transcript.segments)
            job.language, job.language_probability = job.transcript.language, job.transcript.language_probability
            job.task = job.transcript.task
            job.fraction, job.eta_s = 1.0, None
            job.status = Status.DONE
            self._autosave(job)  # its "Saved ..." first: the status bar keeps the last line, which matters more
            if self.history:
                self.history.save(job)
            if job.transcript.audio_track:
                t = job.transcript.audio_track
                self.notice.emit(f"{job.name}: transcribed audio track {t.track} of {t.tracks} ({t.why})")
            if job.transcript.uncovered_speech:
                self.notice.emit(f"{job.name}: speech without text at {describe_gaps(job.transcript.uncovered_speech)}"
                                 " (decoded again on its own, still nothing)")
            self._finish(job, Status.DONE)
        elif kind == P.CANCELLED:
            if m.get("transcript"):
                job.segments = list(transcript_from_dict(m["transcript"]).segments)
            self._finish(job, Status.CANCELLED)
        elif kind == P.ERROR:
            job.error, job.error_detail = m.get("message", "error"), m.get("detail", "")
            self._finish(job, Status.ERROR)

    def _memory(self, m: dict) -> None:
        sample = m.get("sample") or {}
        job = self.model.find(m["job"]) if m.get("job") is not None else None
        if job is not None:
            job.kv_peak_bytes = max(job.kv_peak_bytes, int(sample.get("kv_bytes") or 0))
        self.memorySample.emit(sample)

    def _on_crash(self, job_id, message: str) -> None:
        job = self.model.find(job_id) if job_id is not None else None
        if job is not None and not job.status.finished:
            if job.status is Status.CANCELLING:
                self._finish(job, Status.CANCELLED)
            else:
                job.error = message
                self._finish(job, Status.ERROR)
        else:
            self.notice.emit(message)
            self.pump()

    def _finish(self, job: Job, status: Status) -> None:
        job.status = status
        job.eta_s = None
        self._changed(job)
        self.jobFinished.emit(job.id)
        self.pump()

    def _changed(self, job: Job) -> None:
        self.model.refresh(job)
        self.jobChanged.emit(job.id)

    @property
    def attached(self) -> bool:
        return not self._detached

    def detach(self) -> None:
        """Stop listening to the worker (a shared worker outlives this controller). Idempotent."""
        if self._detached:
            return
        self._detached = True
        for signal, slot in ((self.worker.event, self._on_event), (self.worker.crashed, self._on_crash),
                             (self.worker.hello, self.workerHello)):
            try:
                signal.disconnect(slot)
            except (RuntimeError, TypeError):
                pass

    def shutdown(self) -> None:
        self.prober.wait(3000)
        self.worker.shutdown()
