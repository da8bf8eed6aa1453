"""The worker process on its own: protocol errors, crashes, hard kill, clean shutdown."""
from __future__ import annotations

import os
import signal

import psutil
from gui_helpers import SHORT, wait_finished

from app.jobs.job import Status
from app.worker import protocol as P
from app.worker.client import WorkerClient


def collect(worker: WorkerClient) -> list[dict]:
    events: list[dict] = []
    worker.event.connect(events.append)
    return events


def test_worker_reports_a_readable_error_and_serves_the_next_job(qtbot, shared_worker, bad_file):
    events = collect(shared_worker)
    shared_worker.submit(P.msg(P.TRANSCRIBE, 901, path=str(bad_file), model={}))
    qtbot.waitUntil(lambda: shared_worker.idle, timeout=120_000)
    [err] = [e for e in events if e["job"] == 901 and e["type"] in P.FINAL]
    assert err["type"] == P.ERROR
    assert err["message"].startswith("Cannot read this file:") and "Traceback" in err["detail"]
    shared_worker.submit(P.msg(P.TRANSCRIBE, 902, path=str(SHORT), model={}))
    qtbot.waitUntil(lambda: shared_worker.idle, timeout=120_000)
    kinds = [e["type"] for e in events if e["job"] == 902]
    assert kinds[-1] == P.DONE and P.SEGMENT in kinds and P.PROGRESS in kinds
    assert any(e["type"] == P.MEMORY and e["sample"]["rss_bytes"] > 0 for e in events)
    shared_worker.event.disconnect(events.append)


def test_worker_crash_fails_the_job_and_the_next_job_gets_a_fresh_worker(qtbot, make_window, long_recording):
    worker = WorkerClient()
    try:
        window = make_window(worker=worker)
        [job, after] = window.add_paths([long_recording, SHORT])
        qtbot.waitUntil(lambda: job.status is Status.RUNNING, timeout=120_000)
        first_pid = worker.pid
        os.kill(first_pid, signal.SIGKILL)  # what a native crash in the model code looks like from here
        wait_finished(qtbot, job, timeout=30_000)
        assert job.status is Status.ERROR
        assert "stopped unexpectedly" in job.error and "SIGKILL" in job.error
        wait_finished(qtbot, after)
        assert after.status is Status.DONE, after.error
        assert worker.pid != first_pid and worker.starts == 2
        assert not psutil.pid_exists(first_pid) or psutil.Process(first_pid).status() == psutil.STATUS_ZOMBIE
    finally:
        worker.shutdown()


def test_close_asks_while_jobs_run_and_leaves_no_process_behind(qtbot, settings, long_recording):
    from app.main_window import MainWindow

    window = MainWindow(settings, preload=False)  # owns its worker, as in the real app
    qtbot.addWidget(window)
    asked: list[int] = []
    answer = [False]

    def confirm(n: int) -> bool:
        asked.append(n)
        return answer[0]

    window.confirm_quit = confirm
    window.add_paths([long_recording])
    qtbot.waitUntil(lambda: window.worker.pid is not None, timeout=30_000)
    pid = window.worker.pid
    assert not window.close()  # "No": the window stays and keeps working
    assert asked == [1] and window.worker.alive
    answer[0] = True
    assert window.close()
    assert asked == [1, 1]
    assert not window.worker.alive
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    children = [p for p in psutil.Process().children(recursive=True) if p.pid == pid]
    assert not children


def test_conversion_cancel_kills_its_process(qtbot, models_dir):
    from app.jobs.conversion import ConversionRunner
    from app.model_choice import ModelChoice

    runner = ConversionRunner(models_dir)
    stages: list[str] = []
    runner.stage.connect(stages.append)
    with qtbot.waitSignal(runner.cancelled, timeout=60_000):
        runner.start(ModelChoice(kv_mode="mla", rank=17))
        qtbot.waitUntil(lambda: runner.worker.pid is not None, timeout=10_000)
        pid = runner.worker.pid
        runner.cancel()  # conversion has no checkpoints: cancel is a kill
    assert not runner.busy
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not any(p.name.startswith("tiny.en-mla-MLAr=17") for p in models_dir.iterdir())
