"""Which vocabulary tokens cannot be part of English text: what a translation into English may not write.

Whisper's smaller multilingual models often stop translating and write the source language
instead (base on the AISHELL clip, at beam 5: "Guangzhou市房地产中间协会分析"; faster-whisper on
the same weights writes the same). A user who asked for English gets English script: tokens
of other scripts, and byte pieces of multi-byte characters that are not Latin, are suppressed.
Latin letters with accents (names, loanwords), punctuation, currency and letterlike symbols stay.
"""
from __future__ import annotations

import functools

_ALLOWED = ((0x0000, 0x024F), (0x1E00, 0x1EFF), (0x2000, 0x206F), (0x20A0, 0x20CF), (0x2100, 0x214F))
# UTF-8 lead bytes of the allowed characters that BPE splits into byte pieces (é, €, “, —):
# U+0080-U+027F (0xC2-0xC9) and U+2000-U+2FFF (0xE2); continuation bytes (0x80-0xBF) only
# complete what such a lead byte began, since every other lead byte is suppressed.
_PIECE_BYTES = frozenset(range(0x20, 0x7F)) | frozenset(range(0x80, 0xC0)) | frozenset(range(0xC2, 0xCA)) | {0xE2}


def is_english_script(text: str) -> bool:
    """Only Latin letters (accents included), digits, punctuation and common symbols; no broken bytes."""
    return "\ufffd" not in text and all(any(lo <= ord(c) <= hi for lo, hi in _ALLOWED) for c in text)


@functools.lru_cache(maxsize=1)
def _byte_of_char() -> dict[str, int]:
    """GPT-2 byte-level BPE's printable stand-in for each byte (Whisper's tokenizer spells tokens with them)."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = dict(zip(kept, kept))
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = 256 + extra
            extra += 1
    return {chr(c): b for b, c in chars.items()}


def _may_write(tokenizer, token_id: int, piece: str) -> bool:
    if "\ufffd" not in piece:
        return is_english_script(piece)
    spelled = tokenizer.convert_ids_to_tokens(token_id)  # a piece of a multi-byte character: look at its bytes
    table = _byte_of_char()
    return all(table.get(c, -1) in _PIECE_BYTES for c in spelled)


@functools.lru_cache(maxsize=4)
def _non_english(tokenizer, n_text: int) -> tuple[int, ...]:
    pieces = tokenizer.batch_decode([[i] for i in range(n_text)])
    return tuple(i for i, piece in enumerate(pieces) if not _may_write(tokenizer, i, piece))


def non_english_tokens(tokenizer, n_text: int) -> list[int]:
    """Ids below `n_text` (the text tokens, before the special ones) that English text never contains."""
    return list(_non_english(tokenizer, n_text))
