"""Worker side: keep one loaded model between jobs; reload only when the model settings change."""
from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from pathlib import Path

from app.model_choice import ModelChoice
from app.worker.conversion import convert_to_folder, is_mla_folder

log = logging.getLogger(__name__)


class ModelCache:
    def __init__(self) -> None:
        self._key: str | None = None
        self._loaded = None
        self.loads = 0  # how many times a model was actually loaded (tests read it via the model event)

    def get(self, choice: ModelChoice, models_dir: str | None, stage: Callable[[str], None],
            calibration: list[str] | None = None):
        key = choice.model_key()
        if key == self._key and self._loaded is not None:
            return self._loaded
        self._key, self._loaded = None, None
        gc.collect()  # free the previous model before loading the next
        spec = self.spec_for(choice, models_dir, stage, calibration)
        from engine.model_sources import resolve_model

        stage(f"Loading {choice.source_text()}")
        self._loaded = resolve_model(spec, device=choice.device, kv_cache=choice.kv_cache)
        self._key = key
        self.loads += 1
        return self._loaded

    @staticmethod
    def spec_for(choice: ModelChoice, models_dir: str | None, stage: Callable[[str], None],
                 calibration: list[str] | None = None) -> str:
        """The spec to load: the source itself, or its (cached) MLA conversion.

        A first-use conversion calibrates on `calibration` (the recording about to be
        transcribed): audio like the user's beats the bundled sample.
        """
        if not choice.is_mla or is_mla_folder(choice.source):
            return choice.source
        if not models_dir:
            raise ValueError("MLA mode needs a folder for converted models")
        folder = Path(models_dir) / choice.conversion_name()
        if not is_mla_folder(str(folder)):
            stage(f"Converting {choice.source_text()} to {choice.kv_text()} (first use only)")
            convert_to_folder(choice, folder, stage, calibration)
        return str(folder)
