"""kill -9 in the middle of a transcription, run the same command again: same transcript, nothing lost."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import soundfile as sf

from engine.audio import load_audio
from engine.checkpoint import Checkpoint
from engine.model_sources import resolve_model
from engine.results import Word
from engine.transcribe import ResumePoint, Transcriber, TranscribeOptions
from tests.conftest import DATA, REPO


def _long_file(path, repeats=4):
    parts = []
    for _ in range(repeats):
        for f in sorted(DATA.glob("*.flac")):
            parts += [load_audio(f), np.zeros(8000, np.float32)]
    sf.write(path, np.concatenate(parts), 16000)
    return path


def _cli(args, cwd):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "engine.cli", "transcribe", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_kill_9_mid_run_then_resume_gives_identical_transcript(tiny, tmp_path):
    audio = _long_file(tmp_path / "lecture.flac")  # ~100 s: four windows
    args = [str(audio), "--format", "json", "--out", "out", "-q", "--beam-size", "1"]
    resume_file = tmp_path / "out" / ".lecture.whisper-mla-resume.json"

    proc = _cli(args, tmp_path)
    deadline = time.time() + 300
    position = 0
    while time.time() < deadline and proc.poll() is None:
        if resume_file.exists():
            try:
                position = json.loads(resume_file.read_text())["point"]["position"]
            except ValueError:
                position = 0  # never happens with atomic writes, but do not crash the test on it
            if position > 0:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    saved = json.loads(resume_file.read_text())["point"]
    assert 0 < saved["position"] < 100 * 100 and saved["segments"]
    assert not (tmp_path / "out" / "lecture.json").exists()

    second = _cli(args, tmp_path)
    _, err = second.communicate(timeout=600)
    assert second.returncode == 0, err
    assert not resume_file.exists()  # done: the resume file is gone
    resumed = json.loads((tmp_path / "out" / "lecture.json").read_text())

    # the CLI ran the default cache mode with word timings (its defaults): the uninterrupted run must too
    straight = Transcriber(resolve_model(None, "cpu", kv_cache="compressed"),
                           TranscribeOptions(word_timestamps=True)).transcribe(audio)
    assert [(s["start"], s["end"], s["text"]) for s in resumed["segments"]] == \
           [(s.start, s.end, s.text) for s in straight.segments]
    assert [[Word.from_dict(w) for w in s["words"]] for s in resumed["segments"]] == \
           [list(s.words) for s in straight.segments]  # and the same words, at the same times
    assert [s["id"] for s in resumed["segments"]] == list(range(len(straight.segments)))


def test_resume_point_is_ignored_for_other_settings(tiny, tmp_path):
    audio = _long_file(tmp_path / "a.flac", repeats=1)
    model = tiny.info.to_dict()
    ck = Checkpoint(tmp_path, audio, model, TranscribeOptions())
    ck.save(ResumePoint(position=1000, next_id=3, context=[1, 2], last_text="x"))
    assert ck.load().position == 1000
    assert Checkpoint(tmp_path, audio, model, TranscribeOptions(beam_size=5)).load() is None
    audio.write_bytes(audio.read_bytes() + b"\0")  # the file changed
    assert Checkpoint(tmp_path, audio, model, TranscribeOptions()).load() is None
    ck.path.write_text("{ not json")
    assert Checkpoint(tmp_path, audio, model, TranscribeOptions()).load() is None
