"""Worker side: facts for the GUI's first paint: GPU status and which bundled models are installed."""
from __future__ import annotations

import importlib.util
from dataclasses import asdict, is_dataclass


def gpu_info() -> dict:
    """engine.memory.gpu_status() as a dict {available, name, reason}."""
    try:
        from engine.memory import gpu_status

        status = gpu_status()
    except Exception as e:  # engine.memory missing or broken: say so, never guess
        return {"available": False, "name": None, "reason": f"GPU status unavailable ({type(e).__name__})"}
    d = asdict(status) if is_dataclass(status) else dict(vars(status))
    return {k: (v if isinstance(v, (str, int, float, bool, type(None))) else str(v)) for k, v in d.items()}


def bundled_models() -> dict[str, bool]:
    """{name: installed} for engine.model_sources.BUNDLED, without importing the weights."""
    from engine.model_sources import BUNDLED

    out = {}
    for name, entry in BUNDLED.items():
        packages = [entry[0]] + [p.split("/", 1)[0] for p in entry[2] if "/" in p]
        try:
            out[name] = all(importlib.util.find_spec(p) is not None for p in packages)
        except (ImportError, ValueError, IndexError, TypeError):
            out[name] = True
    return out
