"""Which stretches of speech a transcript left without text: the check that no speech is lost silently.

Whisper's seek-by-timestamp loop can jump over half a minute of clear speech (the model
predicts a late timestamp). After a file is decoded, the speech the VAD found is compared
with the segments: every stretch of speech longer than `MIN_GAP_S` that no segment with text
covers is returned, to be decoded again on its own, and reported if that still gives nothing.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from engine.results import Segment

MIN_GAP_S = 2.0
MERGE_S = 0.5  # uncovered pieces of speech this close together are one stretch


@dataclass(frozen=True)
class SpeechRegion:
    start: float  # seconds from the start of the file
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


def _gaps(regions: Sequence[SpeechRegion], segments: Iterable[Segment]) -> list[SpeechRegion]:
    """Parts of `regions` that no segment with text overlaps, in order."""
    spans = sorted((s.start, s.end) for s in segments if s.text.strip() and s.end > s.start)
    gaps: list[SpeechRegion] = []
    i = 0
    for region in regions:
        cursor = region.start
        while i < len(spans) and spans[i][1] <= region.start:
            i += 1
        j = i
        while j < len(spans) and spans[j][0] < region.end:
            if spans[j][0] > cursor:
                gaps.append(SpeechRegion(cursor, spans[j][0]))
            cursor = max(cursor, spans[j][1])
            j += 1
        if cursor < region.end:
            gaps.append(SpeechRegion(cursor, region.end))
    return gaps


def uncovered(regions: Sequence[SpeechRegion], segments: Iterable[Segment],
              min_gap_s: float = MIN_GAP_S) -> list[SpeechRegion]:
    """Stretches of speech without text (pieces closer than MERGE_S joined), each longer than `min_gap_s`."""
    merged: list[SpeechRegion] = []
    for g in _gaps(regions, segments):
        if merged and g.start - merged[-1].end <= MERGE_S:
            merged[-1] = SpeechRegion(merged[-1].start, g.end)
        else:
            merged.append(g)
    return [g for g in merged if g.duration > min_gap_s]


def coverage(regions: Sequence[SpeechRegion], segments: Iterable[Segment]) -> float:
    """Share of the speech (by duration) that segments with text overlap."""
    total = sum(r.duration for r in regions)
    if total <= 0:
        return 1.0
    missing = sum(g.duration for g in _gaps(regions, segments))
    return max(0.0, 1.0 - missing / total)


def describe_gaps(gaps: Iterable[tuple[float, float]]) -> str:
    """'2:36-3:02 (26 s), 10:05-10:09 (4 s)': what a user is told about speech left without text."""
    def clock(t: float) -> str:
        return f"{int(t) // 60}:{int(t) % 60:02d}"

    return ", ".join(f"{clock(a)}-{clock(b)} ({b - a:.0f} s)" for a, b in gaps)
