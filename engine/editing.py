"""Corrections a user makes to a transcript: a segment's new text, find and replace.

An edited segment keeps the timing of every word the user left alone; only the words that
changed are given new times, spread over the time the words they replace took (or the gap
they were put into), so word-level subtitles and click-to-play stay right around an edit.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import replace

from engine.results import Segment, Transcript, Word

EDITED_PROBABILITY = 1.0  # a word the user typed is as sure as a word can be (no "unsure" tint)
_MIN_WORD_S = 0.05  # below this per word, a gap is widened into the word before it


def edit_segment(segment: Segment, text: str) -> Segment:
    """`segment` with `text` as its words; unchanged words keep their times. Marks it edited."""
    text = " ".join(text.split())
    if text == segment.text.strip():
        return segment
    spaced = segment.text.startswith(" ")
    new_text = (" " if spaced and text else "") + text
    words = _retime(segment, text) if segment.words else ()
    return replace(segment, text=new_text, words=words, tokens=(), edited=True)


def replace_all(transcript: Transcript, find: str, replacement: str, *, match_case: bool = False,
                whole_words: bool = False) -> tuple[Transcript, int]:
    """Every occurrence of `find` in the transcript's segments replaced; (new transcript, count)."""
    if not find:
        return transcript, 0
    pattern = re.escape(find)
    if whole_words:
        pattern = rf"(?<!\w){pattern}(?!\w)"
    rx = re.compile(pattern, 0 if match_case else re.IGNORECASE)
    count = 0
    segments = []
    for seg in transcript.segments:
        new, n = rx.subn(lambda _m: replacement, seg.text)
        count += n
        segments.append(edit_segment(seg, new) if n else seg)
    return (replace(transcript, segments=segments) if count else transcript), count


def _pieces(text: str, spaced: bool) -> list[str]:
    """The words of `text` as Word.word spells them: ' word' where the language spaces words, else characters."""
    if spaced:
        return [" " + w for w in text.split()]
    return [c for c in text if not c.isspace()]


def _key(word: str) -> str:
    """What makes two words the same word: letters and digits, any case ("so," is "So")."""
    return re.sub(r"\W", "", word).lower() or word.strip()


def _retime(segment: Segment, text: str) -> tuple[Word, ...]:
    old = list(segment.words)
    spaced = any(w.word.startswith(" ") for w in old)
    new = _pieces(text, spaced)
    matcher = difflib.SequenceMatcher(a=[_key(w.word) for w in old], b=[_key(w) for w in new], autojunk=False)
    out: list[Word] = []
    for op, a0, a1, b0, b1 in matcher.get_opcodes():
        if op == "equal":
            out.extend(replace(old[a0 + k], word=new[b0 + k]) for k in range(a1 - a0))
            continue
        if b1 == b0:  # deleted words: their time goes to nobody (the speech is still there, unsaid)
            continue
        if a1 > a0:  # replaced: the new words take the old words' time
            start, end = old[a0].start, old[a1 - 1].end
        else:  # inserted: the gap between the neighbours
            start = out[-1].end if out else segment.start
            end = old[a0].start if a0 < len(old) else segment.end
        pieces = new[b0:b1]
        if end - start < _MIN_WORD_S * len(pieces) and out:  # no room: share the previous word's time
            prev = out.pop()
            shared = _spread([prev.word, *pieces], prev.start, max(end, prev.end))
            out.extend([replace(shared[0], probability=prev.probability), *shared[1:]])
        else:
            out.extend(_spread(pieces, start, max(end, start)))
    return tuple(out)


def _spread(pieces: list[str], start: float, end: float) -> list[Word]:
    """Words for `pieces` over [start, end], each as long as its letters, as sure as typed words are."""
    weights = [max(1, len(p.strip())) for p in pieces]
    total = sum(weights)
    words, t = [], start
    for i, (piece, w) in enumerate(zip(pieces, weights)):
        t_end = end if i == len(pieces) - 1 else t + (end - start) * w / total
        words.append(Word(piece, round(t, 3), round(t_end, 3), EDITED_PROBABILITY))
        t = t_end
    return words
