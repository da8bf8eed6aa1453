"""A file with several audio tracks: the one with speech is transcribed, and the user is told which."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.audio import AudioError, load_audio, probe
from engine.audio_tracks import choose_track
from engine.transcribe import Transcriber, TranscribeOptions
from media_tracks import music_and_speech

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def music_then_speech(tmp_path_factory, sample_path) -> tuple[Path, np.ndarray]:
    return music_and_speech(tmp_path_factory.mktemp("tracks") / "talk.mka", sample_path)


def test_every_track_can_be_read_and_a_missing_one_is_named(music_then_speech):
    path, speech = music_then_speech
    assert probe(path).tracks == 2 and probe(path, 2).track == 2
    np.testing.assert_allclose(load_audio(path, track=2), speech, atol=1e-4)
    assert np.abs(load_audio(path, track=1) - speech[: len(speech)]).max() > 0.1  # the other track
    with pytest.raises(AudioError, match=r"has 2 audio tracks; there is no audio track 3 \(choose 1 to 2\)"):
        probe(path, 3)


def test_the_track_with_speech_is_chosen_and_reported(music_then_speech, tiny):
    path, _ = music_then_speech
    choice = choose_track(path)
    assert choice.track == 2 and choice.tracks == 2 and "most speech" in choice.why
    t = Transcriber(tiny, TranscribeOptions(beam_size=1)).transcribe(path)
    assert "ask not what your country can do for you" in t.text.lower()
    assert json.loads(json.dumps(t.to_dict()))["audio_track"] == choice.to_dict()
    forced = Transcriber(tiny, TranscribeOptions(beam_size=1, audio_track=1)).transcribe(path)
    assert "country" not in forced.text.lower() and forced.audio_track.why == "chosen with --audio-track"


def test_cli_says_which_track_and_refuses_a_track_the_file_lacks(music_then_speech, sample_path, tmp_path):
    path, _ = music_then_speech
    env = dict(os.environ, PYTHONPATH=str(REPO))

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "engine.cli", "transcribe", *args, "--beam-size", "1"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)

    out = cli(str(path), "--out", "a", "--format", "txt")
    assert out.returncode == 0, out.stderr
    assert "talk.mka: audio track 2 of 2 (most speech" in out.stderr
    assert "country" in (tmp_path / "a" / "talk.txt").read_text()
    out = cli(str(path), str(sample_path), "--audio-track", "2", "--out", "b", "--format", "txt")
    assert out.returncode == 1  # the sample has one track: that file fails by name, the other is done
    assert f"error: {sample_path}: has 1 audio track; there is no audio track 2 (choose 1)" in out.stderr
    assert (tmp_path / "b" / "talk.txt").exists() and "Traceback" not in out.stderr
