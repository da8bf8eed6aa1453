"""Chunks for batched decoding: speech regions packed into pieces of at most 30 s, cut in pauses.

Batched windows cannot seek to the last complete segment the way sequential decoding does, so
every chunk must begin and end where nobody speaks: then no word is split and no sentence is
left unfinished at a chunk's end. Consecutive VAD regions are packed while the chunk (with
its padding) stays within one decoder window; the pauses inside a chunk are kept, so a chunk is
one contiguous stretch of the file and segment times map back by adding its start.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.features import FRAMES_PER_SECOND, N_FRAMES
from engine.results import Segment
from engine.speech_coverage import SpeechRegion, uncovered

MIN_MISSED_S = 0.5  # speech a chunk's decode left without text, this long or more, is decoded again
PAD_S = 0.4  # silence kept around the speech of a chunk (faster-whisper pads its VAD chunks as much)
MAX_CHUNK_FRAMES = N_FRAMES


@dataclass(frozen=True)
class Chunk:
    """One stretch of a file to decode as a window, in mel frames (100 per second)."""

    start: int
    frames: int

    @property
    def end(self) -> int:
        return self.start + self.frames


def plan_chunks(regions: Sequence[SpeechRegion], total_frames: int, pad_s: float = PAD_S,
                max_frames: int = MAX_CHUNK_FRAMES) -> list[Chunk]:
    """Pack `regions` (in order, each at most `max_frames` long) into chunks of at most `max_frames`.

    Each chunk gets up to `pad_s` of the silence on either side, never past the middle of the
    pause to its neighbour, so chunks never overlap and no audio is decoded twice.
    """
    fps = FRAMES_PER_SECOND
    groups: list[list[int]] = []  # [first speech frame, last speech frame]
    pad = int(pad_s * fps)
    for a, b in _spans(regions, total_frames, max_frames):
        if groups and b - groups[-1][0] <= max_frames - 2 * pad:
            groups[-1][1] = b
        else:
            groups.append([a, b])
    chunks: list[Chunk] = []
    for i, (a, b) in enumerate(groups):
        lo = max(a - pad, 0 if i == 0 else (groups[i - 1][1] + a) // 2, chunks[-1].end if chunks else 0)
        hi = min(b + pad, total_frames if i == len(groups) - 1 else (b + groups[i + 1][0]) // 2)
        if hi - lo > max_frames:  # speech of nearly full length: its padding gives way
            lo = min(max(lo, hi - max_frames), a)
            hi = min(hi, lo + max_frames)
        chunks.append(Chunk(lo, hi - lo))
    return chunks


def _spans(regions: Sequence[SpeechRegion], total_frames: int, max_frames: int) -> list[tuple[int, int]]:
    """Regions in frames, clipped to the file; one longer than a window (rare: the VAD splits at
    pauses first) is cut into equal parts so that no speech falls outside every chunk."""
    out: list[tuple[int, int]] = []
    for r in regions:
        a, b = max(0, int(r.start * FRAMES_PER_SECOND)), min(total_frames, int(round(r.end * FRAMES_PER_SECOND)))
        if b <= a:
            continue
        parts = -(-(b - a) // max_frames)
        edges = [a + (b - a) * k // parts for k in range(parts + 1)]
        out.extend(zip(edges[:-1], edges[1:]))
    return out


def missed_speech(regions: Sequence[SpeechRegion], chunk: Chunk, segments: Sequence[Segment],
                  min_s: float = MIN_MISSED_S, pad_s: float = PAD_S) -> list[Chunk]:
    """Stretches of `chunk` where the VAD hears speech and `segments` (file times) have no text, padded."""
    fps = FRAMES_PER_SECOND
    a, b = chunk.start / fps, chunk.end / fps
    inside = [SpeechRegion(max(r.start, a), min(r.end, b)) for r in regions if r.end > a and r.start < b]
    out = []
    for gap in uncovered(inside, segments, min_gap_s=min_s):
        lo = max(chunk.start, int(round((gap.start - pad_s) * fps)))
        hi = min(chunk.end, int(round((gap.end + pad_s) * fps)))
        if hi > lo:
            out.append(Chunk(lo, hi - lo))
    return out


def deal_lanes(n_chunks: int, lanes: int) -> list[list[int]]:
    """Chunk indices 0..n-1 split into at most `lanes` contiguous runs of near-equal length.

    A batch decodes the next chunk of every lane, so each chunk follows the one before it in
    its lane by exactly one batch and can be prompted with its text.
    """
    lanes = max(1, min(lanes, n_chunks))
    edges = [n_chunks * k // lanes for k in range(lanes + 1)]
    return [list(range(a, b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]
