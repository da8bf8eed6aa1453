"""Turn exceptions raised in the worker into one line a user can act on."""
from __future__ import annotations

import traceback


def readable(e: BaseException) -> str:
    name = type(e).__name__
    if hasattr(e, "reason") and hasattr(e, "path"):  # engine.audio.AudioError
        return f"Cannot read this file: {e.reason}"
    if name == "ModelSourceError":
        return str(e)
    if "OutOfMemory" in name:
        return ("Out of GPU memory. Try MLA 87.5% with exact cross-attention, beam size 1, "
                "a smaller model, or the CPU.")
    if isinstance(e, MemoryError):
        return "Out of memory. Try a smaller model, MLA, or beam size 1."
    text = str(e).strip()
    return f"{name}: {text}" if text else name


def detail(e: BaseException) -> str:
    return "".join(traceback.format_exception(type(e), e, e.__traceback__))
