"""Everything the app remembers across restarts, in one QSettings-backed object.

Tests pass their own QSettings (an .ini file in a temp folder), so they never touch the
user's real settings.
"""
from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings, QStandardPaths

from app import APP_NAME, ORG_NAME
from app.model_choice import ModelChoice

MAX_CUSTOM_MODELS = 12


def default_settings() -> QSettings:
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, ORG_NAME, "whisper-mla-gui")


def _documents() -> Path:
    docs = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.DocumentsLocation)
    return Path(docs or Path.home())


class AppSettings:
    def __init__(self, qsettings: QSettings | None = None) -> None:
        self.q = qsettings if qsettings is not None else default_settings()
        self._own_file = qsettings is not None  # tests and the self-test: keep everything beside their file

    # -- model -------------------------------------------------------------------------------
    @property
    def model_choice(self) -> ModelChoice:
        raw = self.q.value("model/choice", "")
        try:
            return ModelChoice.from_dict(json.loads(raw) if raw else None)
        except (TypeError, ValueError):
            return ModelChoice()

    @model_choice.setter
    def model_choice(self, choice: ModelChoice) -> None:
        self.q.setValue("model/choice", json.dumps(choice.to_dict()))

    @property
    def custom_models(self) -> list[str]:
        """Model folders and hub ids the user added (newest first)."""
        raw = self.q.value("model/custom", "")
        try:
            items = json.loads(raw) if raw else []
        except (TypeError, ValueError):
            return []
        return [str(x) for x in items if isinstance(x, str)][:MAX_CUSTOM_MODELS]

    @custom_models.setter
    def custom_models(self, items: list[str]) -> None:
        self.q.setValue("model/custom", json.dumps(list(dict.fromkeys(items))[:MAX_CUSTOM_MODELS]))

    # -- folders -----------------------------------------------------------------------------
    @property
    def output_dir(self) -> Path:
        value = self.q.value("output/dir", "")
        return Path(value) if value else _documents() / APP_NAME

    @output_dir.setter
    def output_dir(self, path: Path) -> None:
        self.q.setValue("output/dir", str(path))

    @property
    def models_dir(self) -> Path:
        """Where MLA conversions made by the app are saved."""
        value = self.q.value("model/dir", "")
        if value:
            return Path(value)
        data = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppLocalDataLocation)
        return Path(data or Path.home() / ".local" / "share" / ORG_NAME) / "models"

    @models_dir.setter
    def models_dir(self, path: Path) -> None:
        self.q.setValue("model/dir", str(path))

    @property
    def history_dir(self) -> Path:
        """Finished transcripts (with the user's corrections) that the queue shows again after a restart."""
        if self._own_file:
            return Path(self.q.fileName()).parent / "history"
        data = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppLocalDataLocation)
        return Path(data or Path.home() / ".local" / "share" / ORG_NAME) / "history"

    @property
    def last_open_dir(self) -> str:
        return str(self.q.value("output/last_open", "") or "")

    @last_open_dir.setter
    def last_open_dir(self, path: str) -> None:
        self.q.setValue("output/last_open", path)

    # -- window state ------------------------------------------------------------------------
    def save_state(self, name: str, data: QByteArray) -> None:
        self.q.setValue(f"window/{name}", data)

    def state(self, name: str) -> QByteArray | None:
        value = self.q.value(f"window/{name}")
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def sync(self) -> None:
        self.q.sync()
