"""Whisper-MLA engine: model loading, audio, long-form transcription, export. No Qt in here.

The public API is re-exported lazily so `import engine` stays cheap (no torch until needed).
"""
from __future__ import annotations

__version__ = "0.1.0"

_EXPORTS = {
    "resolve_model": "engine.model_sources",
    "LoadedModel": "engine.model_sources",
    "ModelSourceError": "engine.model_sources",
    "Transcriber": "engine.transcribe",
    "TranscribeOptions": "engine.transcribe",
    "CancelToken": "engine.transcribe",
    "AudioError": "engine.audio",
    "AudioReader": "engine.audio",
    "probe": "engine.audio",
    "load_audio": "engine.audio",
    "export": "engine.export",
    "Segment": "engine.results",
    "Transcript": "engine.results",
    "Progress": "engine.results",
    "RunStats": "engine.results",
    "ModelInfo": "engine.results",
    "KVCacheBytes": "engine.results",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
