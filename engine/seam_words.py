"""Words said twice where a re-decoded stretch meets its neighbours.

A stretch of speech decoded again on its own (the speech check, a chunk's skipped sentence)
starts and ends with a little of the audio around it, so its first or last words are often
the neighbouring segment's last or first words again ("...may be considered as the" + "as the
art of making books"). Those repeats are cut here, word for word, before the segment is kept.
"""
from __future__ import annotations

import re

MAX_SEAM_WORDS = 6  # longer repeats are real speech (a refrain), not a seam

_NOT_WORD = re.compile(r"[^\w']+")


def _key(word: str) -> str:
    return _NOT_WORD.sub("", word.casefold())


def _overlap(tail: list[str], head: list[str], most: int) -> int:
    """The largest k <= most with the last k words of `tail` equal to the first k of `head`."""
    for k in range(min(most, len(tail), len(head)), 0, -1):
        if [_key(w) for w in tail[-k:]] == [_key(w) for w in head[:k]] and any(_key(w) for w in head[:k]):
            return k
    return 0


def trim_seams(text: str, before: str = "", after: str = "", most: int = MAX_SEAM_WORDS) -> str:
    """`text` without the leading words that repeat the end of `before` and the trailing words
    that repeat the start of `after` ("" when nothing is left); Whisper's leading space kept."""
    words = text.split()
    cut_head = _overlap(before.split(), words, most)
    words = words[cut_head:]
    cut_tail = _overlap(words, after.split(), most)
    words = words[: len(words) - cut_tail]
    if not words:
        return ""
    if not cut_head and not cut_tail:
        return text
    return " " + " ".join(words)
