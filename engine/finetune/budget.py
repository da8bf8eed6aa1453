"""How to spend a fine-tuning time budget: one run, or several averaged (torch-free, for the GUI).

Five-minute members are what measured best: at 87.5% KV reduction (tiny.en, LJ Speech + JFK,
36 LibriSpeech utterances, stock 15.10% WER), soups of two and four 5-minute runs read
16.56, 15.63 and 16.42%, all within 1.5 points of stock, where single 5-minute runs read
15.50 to 17.88%, and single 10- and 20-minute runs measured earlier 17.1 to 18.4% (README).
"""
from __future__ import annotations

MEMBER_MINUTES = 5.0  # the measured member length
MAX_RECOMMENDED_RUNS = 4  # the largest soup measured; longer budgets make longer members


def recommended_runs(minutes: float) -> int:
    """Members of at least `MEMBER_MINUTES` once the budget holds two of them (at most 4), else one run."""
    return min(MAX_RECOMMENDED_RUNS, int(minutes // MEMBER_MINUTES)) if minutes >= 2 * MEMBER_MINUTES else 1
