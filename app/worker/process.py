"""The worker process's main loop. Runs in a spawned child: engine (and torch) live only here.

One request at a time from the request queue; every outcome is an event sent over a one-way
pipe (see `protocol`). A pipe, not a queue: if this process dies mid-message the GUI reads
EOF instead of blocking on half a message. A daemon thread exits the process if the GUI process disappears, so a
killed GUI never leaves an orphan transcriber behind.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

import psutil

from app.worker import protocol as P
from app.worker.errors import detail, readable

log = logging.getLogger("app.worker")


class WorkerContext:
    """What a job handler needs: the event sink, the model cache, cancellation, the KV probe."""

    def __init__(self, events, cancel_id) -> None:
        from app.worker.model_cache import ModelCache

        self.events = events
        self.cancel_id = cancel_id
        self.models = ModelCache()
        self.current_job: int | None = None
        self.kv_source = None  # callable -> KVCacheBytes of the running decode, or None
        self.feed_paused = False  # a comparison samples memory itself

    def emit(self, kind: str, job: int | None = None, **fields) -> None:
        self.events.put(P.msg(kind, job, **fields))

    def cancel_token(self, job: int):
        from app.worker.cancel import SharedCancel

        return SharedCancel(self.cancel_id, job)

    def live_kv(self):
        source = self.kv_source
        return source() if source is not None else None


class EventSink:
    """Sends events over the pipe to the GUI; several threads (job, memory sampler) share it."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self.lock = threading.Lock()

    def put(self, m: P.Msg) -> None:
        with self.lock:
            try:
                self.conn.send(m)
            except (BrokenPipeError, EOFError, OSError):  # the GUI has gone: nothing left to do
                os._exit(0)


def _handlers():
    from app.worker import compare_job, convert_job, finetune_job, transcribe_job

    return {P.TRANSCRIBE: transcribe_job.run, P.CONVERT: convert_job.run, P.PRELOAD: convert_job.preload,
            P.COMPARE: compare_job.run, P.FINETUNE: finetune_job.run}


def _watch_parent(parent_pid: int) -> None:
    def loop() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid or not psutil.pid_exists(parent_pid):
                os._exit(0)

    threading.Thread(target=loop, name="parent-watchdog", daemon=True).start()


def _hello_fields() -> dict:
    from app.worker.system_info import bundled_models, gpu_info

    return {"pid": os.getpid(), "gpu": gpu_info(), "bundled": bundled_models()}


def worker_main(requests, events, cancel_id, parent_pid: int, log_level: int = logging.WARNING) -> None:
    """Entry point of the spawned process (a module-level function, so spawn can pickle it)."""
    logging.basicConfig(level=log_level, stream=sys.stderr, format="worker %(levelname)s %(name)s: %(message)s")
    if hasattr(signal, "SIGINT"):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C in a terminal: the GUI decides
    _watch_parent(parent_pid)
    ctx = WorkerContext(EventSink(events), cancel_id)
    ctx.emit(P.HELLO, **_hello_fields())
    from app.worker.memory_feed import MemoryFeed

    feed = MemoryFeed(ctx)
    feed.start()
    handlers = _handlers()
    while True:
        m = requests.get()
        kind = m.get("type")
        if kind == P.SHUTDOWN:
            break
        ctx.current_job = m.get("job")
        try:
            handler = handlers.get(kind)
            if handler is None:
                raise ValueError(f"unknown request {kind!r}")
            handler(ctx, m)
        except Exception as e:  # every failure becomes an event; the worker lives on
            log.debug("job %s failed", ctx.current_job, exc_info=True)
            ctx.emit(P.ERROR, ctx.current_job, message=readable(e), detail=detail(e))
        finally:
            ctx.current_job = None
            ctx.kv_source = None
            ctx.feed_paused = False
    feed.stop()
