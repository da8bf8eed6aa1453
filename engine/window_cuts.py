"""Where to end a 30 s window when windows are decoded independently (batched mode).

Batched windows cannot seek to the last complete segment the way sequential decoding does,
so a fixed 30 s cut would split a word and Whisper drops the unfinished sentence. Cutting at
the quietest moment of the window's last seconds puts the boundary in a pause instead.
"""
from __future__ import annotations

import numpy as np

from engine.features import HOP_LENGTH, N_FRAMES

SEARCH_FRAMES = 1000  # look for a pause in the last 10 s of the window
SMOOTH_FRAMES = 20  # judge quietness over 200 ms, not single 10 ms frames


def quiet_cut(audio: np.ndarray) -> int:
    """Mel frames to keep from a full 30 s window so it ends in its quietest 200 ms."""
    frames = len(audio) // HOP_LENGTH
    if frames < N_FRAMES:
        return frames
    power = np.square(audio[: frames * HOP_LENGTH].reshape(frames, HOP_LENGTH), dtype=np.float64).mean(axis=1)
    tail = power[frames - SEARCH_FRAMES :]
    smooth = np.convolve(tail, np.ones(SMOOTH_FRAMES) / SMOOTH_FRAMES, mode="valid")
    best = int(np.argmin(smooth[::-1]))  # ties: prefer the latest pause, so windows stay long
    quiet_start = len(smooth) - 1 - best
    return frames - SEARCH_FRAMES + quiet_start + SMOOTH_FRAMES // 2
