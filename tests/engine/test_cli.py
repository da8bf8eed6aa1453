"""The `whisper-mla` command as a user runs it: real files, real model, one line per bad file."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys

from tests.conftest import REPO


def run_cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_version(tmp_path):
    out = run_cli("--version", cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.startswith("whisper-mla ")


def test_good_and_bad_files_in_one_run(tiny, sample_path, tmp_path):
    # seeded: about 1 in 200 random byte strings probes as some text format (lrc) with another message
    (tmp_path / "noise.wav").write_bytes(random.Random(0).randbytes(2000))
    (tmp_path / "notes.txt").write_text("not audio")
    (tmp_path / "empty.flac").write_bytes(b"")
    out = run_cli("transcribe", "noise.wav", str(sample_path), "missing.mp3", "notes.txt", "empty.flac",
                  "--format", "json,srt", "--out", "out", cwd=tmp_path)
    assert out.returncode == 1
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: noise.wav: not an audio file or unsupported format (Invalid data found when processing input)",
        "error: missing.mp3: file not found",
        "error: notes.txt: not an audio file or unsupported format (Invalid data found when processing input)",
        "error: empty.flac: file is empty",
    ]
    assert "Traceback" not in out.stderr
    data = json.loads((tmp_path / "out" / "jfk_inaugural_excerpt.json").read_text())
    assert "ask not what your country can do for you" in data["text"]
    for key in ("file", "duration", "language", "model", "text", "segments", "stats"):
        assert key in data
    assert set(data["stats"]) >= {"wall_s", "rtf", "peak_rss_bytes", "peak_device_bytes", "kv_cache_peak_bytes"}
    assert set(data["stats"]["kv_cache_peak_bytes"]) == {"self", "cross"}
    # word timings are on by default: the first cue starts with the first word (0.3 s), not at the window's 0.0
    assert (tmp_path / "out" / "jfk_inaugural_excerpt.srt").read_text().startswith("1\n00:00:00,3")
    assert all(seg["words"] for seg in data["segments"])
    assert "ask not what your country" in out.stdout  # live segments on stdout


def test_unknown_format_fails_before_loading(tmp_path):
    out = run_cli("transcribe", "x.wav", "--format", "docx", cwd=tmp_path)
    assert out.returncode == 2 and "unknown output format" in out.stderr


def test_a_folder_is_transcribed_and_same_named_files_keep_their_own_exports(tiny, sample_path, tmp_path):
    """A folder expands to its recordings, recursively; a second "talk.flac" from another folder
    is written as "talk (2)" instead of overwriting the first one's transcript."""
    for sub in ("day1", "day2/late"):
        (tmp_path / "rec" / sub).mkdir(parents=True)
        (tmp_path / "rec" / sub / "talk.flac").write_bytes(sample_path.read_bytes())
    (tmp_path / "rec" / "day1" / "notes.txt").write_text("not audio, not picked up from a folder")
    out = run_cli("transcribe", "rec", "--format", "txt", "--out", "out", "-q", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["talk (2).txt", "talk.txt"]
    for name in ("talk.txt", "talk (2).txt"):
        assert "ask not what your country can do for you" in (tmp_path / "out" / name).read_text().lower()


def test_a_folder_without_recordings_or_a_missing_file_is_refused_by_name_before_loading(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("x")
    for args in (("transcribe", "empty"), ("convert", "--kv-reduction", "0.75", "--calibrate", "empty", "--out", "m"),
                 ("finetune", "--model", "m", "--audio", "empty", "--out", "t")):
        out = run_cli(*args, cwd=tmp_path)
        assert out.returncode in (1, 2), (args, out.stderr)
        assert "error: empty: no audio or video files in this folder" in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr
    for args in (("convert", "--kv-reduction", "0.75", "--calibrate", "gone.flac", "--out", "m"),
                 ("finetune", "--model", "m", "--audio", "gone.flac", "--out", "t")):
        out = run_cli(*args, cwd=tmp_path)
        assert out.returncode == 1 and "error: gone.flac: audio file not found" in out.stderr, (args, out.stderr)
