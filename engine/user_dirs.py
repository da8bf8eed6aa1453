"""Where the program keeps its own files on a user's machine (never next to the user's files)."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Imported models, teacher caches, the export ledger; WHISPER_MLA_CACHE overrides (tests, portable installs)."""
    env = os.environ.get("WHISPER_MLA_CACHE")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("whisper-mla", appauthor=False))
