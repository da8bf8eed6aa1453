"""GUI side of the worker: owns the child process, polls its events, emits Qt signals.

Lifecycle: the process is spawned on the first request and reused; it loads models and runs
one job at a time. `cancel` asks the running job to stop at its next window and kills the
process if it has not stopped after a grace period. If the process dies, the job in flight
gets an error event and the next request starts a fresh process.

The kill is a fallback for a hung process, so its default grace (90 s) is longer than one
30 s window takes with a large model on a slow CPU; the engine checks the cancel token
before every window. Events travel as plain Python objects (`Signal(object)`), never
converted to QVariantMap.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time

from PySide6.QtCore import QObject, QTimer, Signal

from app import qt_compat
from app.worker import protocol as P
from app.worker.process import worker_main

qt_compat.install()  # PySide6 6.12.0 emit() refcount bug: see qt_compat

log = logging.getLogger(__name__)

NO_JOB = -1
POLL_MS = 30
DRAIN_BUDGET_S = 0.015  # per poll tick, so a flood of events never freezes the GUI


class _Proc:
    """One child process and its channels (recreated after a crash or kill)."""

    def __init__(self, ctx, log_level: int) -> None:
        self.requests = ctx.Queue()
        self.cancel_id = ctx.Value("q", NO_JOB, lock=False)
        self.conn, child_conn = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=worker_main, name="whisper-mla-worker", daemon=True,
                                   args=(self.requests, child_conn, self.cancel_id, os.getpid(), log_level))
        self.process.start()
        child_conn.close()  # so a dead child means EOF here, not a reader blocked forever

    def discard(self) -> None:
        self.requests.cancel_join_thread()
        self.requests.close()
        self.conn.close()


class WorkerClient(QObject):
    event = Signal(object)  # every message from the worker (see protocol), in order
    hello = Signal(object)  # the worker started: gpu, bundled models, pid
    crashed = Signal(object, str)  # (job id or None, message): the process died unexpectedly

    def __init__(self, parent: QObject | None = None, *, cancel_grace_s: float = 90.0,
                 log_level: int = logging.WARNING) -> None:
        super().__init__(parent)
        self.cancel_grace_s = cancel_grace_s
        self.log_level = log_level
        self._ctx = mp.get_context("spawn")
        self._proc: _Proc | None = None
        self.busy_job: int | None = None  # submitted, no final event yet
        self.info: dict = {}  # the last hello
        self.starts = 0
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self.poll)

    # -- state ------------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.process.is_alive()

    @property
    def pid(self) -> int | None:
        return self._proc.process.pid if self._proc else None

    @property
    def idle(self) -> bool:
        return self.busy_job is None

    # -- requests ---------------------------------------------------------------------------
    def start(self) -> None:
        if self.alive:
            return
        self._drop_proc()
        self._proc = _Proc(self._ctx, self.log_level)
        self.starts += 1
        self._timer.start()

    def submit(self, request: P.Msg) -> None:
        """Send a job request; its events arrive through `event` until a final one."""
        if self.busy_job is not None:
            raise RuntimeError(f"worker busy with job {self.busy_job}")
        self.start()
        self.busy_job = request.get("job")
        self._proc.cancel_id.value = NO_JOB
        self._proc.requests.put(request)

    def preload(self, request: P.Msg) -> None:
        """A request that is no job (e.g. preload a model); only while idle."""
        if self.busy_job is None:
            self.start()
            self._proc.requests.put(request)

    def cancel(self, job: int, grace_s: float | None = None) -> None:
        """Stop `job` at its next window; kill the process if it has not stopped after `grace_s`."""
        if self._proc is None or self.busy_job != job:
            return
        self._proc.cancel_id.value = job
        grace = self.cancel_grace_s if grace_s is None else grace_s
        # `self` as context: the timer dies with this object instead of calling into a deleted one
        QTimer.singleShot(int(grace * 1000), self, lambda: self._kill_if_still(job))

    def _kill_if_still(self, job: int) -> None:
        self.poll()
        if self.busy_job == job:
            log.warning("job %s ignored the cancel request: killing the worker", job)
            self.busy_job = None
            self._drop_proc(kill=True)
            self.event.emit(P.msg(P.CANCELLED, job, transcript=None, hard=True))

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Stop the process: ask politely, then terminate, then kill. Safe to call twice."""
        self._timer.stop()
        proc, self._proc = self._proc, None
        job, self.busy_job = self.busy_job, None
        if proc is None:
            return
        if proc.process.is_alive():
            if job is not None:
                proc.cancel_id.value = job  # let the running job stop at its next window
            try:
                proc.requests.put(P.msg(P.SHUTDOWN))
            except (OSError, ValueError):
                pass
            deadline = time.monotonic() + timeout_s
            while proc.process.is_alive() and time.monotonic() < deadline:
                self._discard_pending(proc)  # a child blocked on a full pipe must be able to finish
                proc.process.join(0.05)
        _stop(proc.process)
        proc.discard()

    def _drop_proc(self, kill: bool = False) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if kill:
            _stop(proc.process, polite=False)
        proc.discard()

    @staticmethod
    def _discard_pending(proc: _Proc) -> None:
        try:
            while proc.conn.poll():
                proc.conn.recv()
        except (EOFError, OSError):
            pass

    # -- events -----------------------------------------------------------------------------
    def poll(self) -> None:
        """Deliver pending events (bounded time per call), then notice a dead process."""
        proc = self._proc
        if proc is None:
            return
        deadline = time.monotonic() + DRAIN_BUDGET_S
        try:
            while proc.conn.poll() and time.monotonic() < deadline:
                self._deliver(proc.conn.recv())
                if self._proc is not proc:  # a handler killed or restarted the worker
                    return
        except (EOFError, OSError):
            pass
        if not proc.process.is_alive() and self._proc is proc:
            self._drain_after_exit(proc)

    def _drain_after_exit(self, proc: _Proc) -> None:
        try:
            while proc.conn.poll():
                self._deliver(proc.conn.recv())
        except (EOFError, OSError):
            pass
        if self._proc is not proc:
            return
        code = proc.process.exitcode
        self._proc = None
        proc.discard()
        job, self.busy_job = self.busy_job, None
        self._timer.stop()
        why = _exit_text(code)
        log.warning("worker process exited (%s) during job %s", why, job)
        self.crashed.emit(job, f"The transcription process stopped unexpectedly ({why}). "
                               "The next job will use a fresh process.")

    def _deliver(self, m: P.Msg) -> None:
        kind = m.get("type")
        if kind == P.HELLO:
            self.info = m
            self.hello.emit(m)
        if kind in P.FINAL and m.get("job") is not None and m.get("job") == self.busy_job:
            self.busy_job = None
        self.event.emit(m)


def _stop(process, polite: bool = True) -> None:
    if process.is_alive() and polite:
        process.terminate()
        process.join(1.0)
    if process.is_alive():
        process.kill()
        process.join(2.0)


def _exit_text(code: int | None) -> str:
    if code is None:
        return "unknown exit"
    if code < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"
