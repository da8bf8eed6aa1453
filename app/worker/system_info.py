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
    """{name: installed} for the bundled models (pre-imported in a frozen app, or their packages installed)."""
    from engine.model_sources import bundled_available

    return bundled_available()
