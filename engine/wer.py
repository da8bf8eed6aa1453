"""Word error rate the way Whisper papers report it: Whisper's English normaliser on both sides, then jiwer."""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import jiwer

_SPELLING = Path(__file__).with_name("data") / "english_spelling.json"


@functools.lru_cache(maxsize=1)
def _normalizer():
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    return EnglishTextNormalizer(json.loads(_SPELLING.read_text(encoding="utf-8")))


def normalize(text: str) -> str:
    return _normalizer()(text)


@dataclass(frozen=True)
class WerResult:
    wer: float  # errors / reference words (can exceed 1.0)
    substitutions: int
    deletions: int
    insertions: int
    reference_words: int


def word_error_rate(references: list[str], hypotheses: list[str]) -> WerResult:
    """Corpus WER over pairs of texts (each pair normalised); empty references are skipped."""
    refs, hyps = [], []
    for r, h in zip(references, hypotheses, strict=True):
        nr = normalize(r)
        if nr.strip():
            refs.append(nr)
            hyps.append(normalize(h))
    if not refs:
        return WerResult(0.0, 0, 0, 0, 0)
    out = jiwer.process_words(refs, hyps)
    n = out.substitutions + out.deletions + out.hits
    return WerResult(out.wer, out.substitutions, out.deletions, out.insertions, n)
