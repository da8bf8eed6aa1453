"""Media with several audio tracks, written with PyAV, for the engine's and the app's tests."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def two_tracks(path: Path, first: np.ndarray, second: np.ndarray) -> Path:
    """A Matroska audio file with two FLAC tracks (16 kHz mono), written with PyAV."""
    with av.open(str(path), "w", format="matroska") as c:
        streams = [c.add_stream("flac", rate=16000) for _ in range(2)]
        for s in streams:
            s.layout = "mono"
        for s, x in zip(streams, (first, second)):
            fr = av.AudioFrame.from_ndarray(x[None, :].astype(np.float32), format="flt", layout="mono")
            fr.sample_rate, fr.pts, fr.time_base = 16000, 0, Fraction(1, 16000)
            rs = av.AudioResampler("s16", "mono", 16000, frame_size=s.codec_context.frame_size or 4096)
            for f in rs.resample(fr) + rs.resample(None):
                c.mux(s.encode(f))
            c.mux(s.encode(None))
    return path


def music_and_speech(path: Path, speech_file: Path) -> tuple[Path, np.ndarray]:
    """Track 1: a few held notes (no speech); track 2: the speech of `speech_file`. Returns (path, speech)."""
    from engine.audio import load_audio

    speech = load_audio(speech_file)
    t = np.arange(len(speech)) / 16000
    tones = 0.2 * np.sin(2 * np.pi * (220 + 110 * (t.astype(int) % 4)) * t)
    return two_tracks(path, tones.astype(np.float32), speech), speech
