"""Human strings for durations, byte counts and percentages (no Qt, easy to test)."""
from __future__ import annotations

import math


def duration(seconds: float | None) -> str:
    """h:mm:ss (or m:ss under an hour); an em dash when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "—"
    total = int(round(seconds))
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def timestamp(seconds: float) -> str:
    """A segment start such as 1:02:03.4 or 2:03.4 (tenths, for the transcript pane)."""
    seconds = max(0.0, float(seconds))
    tenths = int(round(seconds * 10))
    whole, t = divmod(tenths, 10)
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}.{t}" if h else f"{m}:{s:02d}.{t}"


def nbytes(n: float | None) -> str:
    """Bytes as KB / MB / GB (decimal units, like file managers); em dash when unknown."""
    if n is None:
        return "—"
    n = float(n)
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= size:
            value = n / size
            return f"{value:.2f} {unit}" if abs(value) < 10 else f"{value:.1f} {unit}"
    return f"{int(n)} B"


def percent(fraction: float | None, digits: int = 0) -> str:
    if fraction is None or not math.isfinite(fraction):
        return "—"
    return f"{100 * fraction:.{digits}f}%"


def speed(audio_s: float, wall_s: float) -> str:
    """'12.3x real time' (audio seconds per wall second)."""
    if wall_s <= 0 or audio_s <= 0:
        return "—"
    return f"{audio_s / wall_s:.1f}x real time"
