"""Option types for the command line: every number and code is checked when parsed, before a model loads.

argparse turns the ArgumentTypeError of these types into one line naming the option, the
allowed range and the value given (`whisper-mla transcribe: error: argument --beam-size: must
be an integer from 1 to 16, not '0'`), exit status 2. A typo then costs nothing, instead of
failing per file after a model loaded, or silently running something else.
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Callable

MAX_BEAM = 16  # openai-whisper's and faster-whisper's users run 1-10; more is memory, not accuracy


def int_in(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An integer from lo to hi (inclusive; no upper bound when hi is None)."""
    def parse(text: str) -> int:
        span = f"from {lo} to {hi}" if hi is not None else f"of at least {lo}"
        try:
            n = int(str(text).strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer {span}, not {text!r}") from None
        if n < lo or (hi is not None and n > hi):
            raise argparse.ArgumentTypeError(f"must be an integer {span}, not {text!r}")
        return n

    parse.__name__ = "integer"
    return parse


def float_in(lo: float, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False
             ) -> Callable[[str], float]:
    """A finite number in [lo, hi] (either end open if asked)."""
    def parse(text: str) -> float:
        left, right = ("(" if lo_open else "["), (")" if hi_open else "]")
        span = f"in {left}{lo:g}, {hi:g}{right}" if hi is not None else f"{'above' if lo_open else 'at least'} {lo:g}"
        try:
            x = float(str(text).strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number {span}, not {text!r}") from None
        bad = not math.isfinite(x) or x < lo or (lo_open and x == lo)
        bad |= hi is not None and (x > hi or (hi_open and x == hi))
        if bad:
            raise argparse.ArgumentTypeError(f"must be a number {span}, not {text!r}")
        return x

    parse.__name__ = "number"
    return parse


def beam_size(text: str) -> int:
    return int_in(1, MAX_BEAM)(text)


def batch_size(text: str) -> int | str:
    """A batch size or 'auto'."""
    from engine.batching import parse_batch_size

    try:
        return parse_batch_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def memory_size(text: str) -> int:
    """Bytes from '6GB', '512MiB', '1.5g'."""
    from engine.batching import parse_size

    try:
        n = parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive memory size (examples: 6GB, 512MiB), not {text!r}")
    return n


def language(text: str) -> str:
    """A Whisper language code ('de') or English name ('german'), returned as the code."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

    key = str(text).strip().lower()
    if key in LANGUAGES:
        return key
    if key in TO_LANGUAGE_CODE:
        return TO_LANGUAGE_CODE[key]
    close = sorted(c for c in LANGUAGES if c.startswith(key[:1]))[:12]
    raise argparse.ArgumentTypeError(f"{text!r} is not a language Whisper knows (codes like en, de, fr, zh or "
                                     f"names like german; starting with {key[:1]!r}: {', '.join(close) or 'none'})")
