"""Which audio track of a file to transcribe: the one with speech.

A video or a multi-track recording can hold music, a silent track or another language before
the speech; libav's default track is simply the first. With several tracks, each one's first
minutes go through the VAD and the track with the most speech wins (the first non-silent one
when no VAD is installed); the user can name one with `--audio-track N`.
"""
from __future__ import annotations

import logging
import os

import numpy as np

from engine.audio import iter_chunks, probe, shown_path
from engine.results import TrackChoice

log = logging.getLogger(__name__)

SCAN_S = 120.0  # seconds of each track listened to before choosing
SILENT_RMS = 10 ** (-60 / 20)  # -60 dBFS: below this a track counts as silent


def choose_track(path: str | os.PathLike, asked: int | None = None) -> TrackChoice:
    """The user's track when `asked` (checked against the file), else the track with the most speech."""
    info = probe(path, asked)  # an `asked` track the file does not have fails here, naming the range
    if asked is not None:
        return TrackChoice(asked, info.tracks, "chosen with --audio-track")
    if info.tracks == 1:
        return TrackChoice(info.track, 1, "the only audio track")
    heads = [next(iter_chunks(path, SCAN_S, track=k), np.zeros(0, np.float32)) for k in range(1, info.tracks + 1)]
    try:
        from engine.vad import VadUnavailable, speech_seconds

        speech = [speech_seconds(h) if len(h) else 0.0 for h in heads]
    except VadUnavailable as e:
        log.warning("%s: %s; taking the first audio track that is not silent", shown_path(path), e)
        speech = [0.0] * len(heads)
    shown = ", ".join(f"track {k}: {s:.0f} s" for k, s in enumerate(speech, 1))
    if max(speech) > 0:
        best = int(np.argmax(speech)) + 1
        why = f"most speech in the first {SCAN_S / 60:.0f} min ({shown})"
    else:
        loud = [k for k, h in enumerate(heads, 1) if len(h) and float(np.sqrt(np.mean(h.astype(np.float64) ** 2))) > SILENT_RMS]
        best = loud[0] if loud else info.track
        why = "no speech heard on any track; the first one that is not silent" if loud else "every track is silent"
    choice = TrackChoice(best, info.tracks, why)
    log.info("%s: audio track %d of %d (%s)", shown_path(path), best, info.tracks, why)
    return choice
