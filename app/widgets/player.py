"""Play a recording from a given second, if QtMultimedia works here; otherwise say why."""
from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QObject, QUrl, Signal

log = logging.getLogger(__name__)


class Player(QObject):
    stateChanged = Signal(bool)  # playing or not
    positionChanged = Signal(float)  # seconds into the recording being played

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.available = False
        self.reason = ""
        self._player = None
        self._pending_ms: int | None = None
        try:
            from PySide6.QtMultimedia import QAudioOutput, QMediaPlayer
        except (ImportError, OSError) as e:  # e.g. a missing PulseAudio library on a server
            self.reason = f"audio playback unavailable ({e})"
            log.info(self.reason)
            return
        self._player = QMediaPlayer(self)
        self._output = QAudioOutput(self)
        self._player.setAudioOutput(self._output)
        self._player.mediaStatusChanged.connect(self._on_status)
        self._player.playbackStateChanged.connect(
            lambda s: self.stateChanged.emit(s == QMediaPlayer.PlaybackState.PlayingState))
        self._player.positionChanged.connect(lambda ms: self.positionChanged.emit(ms / 1000.0))
        self._player.errorOccurred.connect(lambda _e, text: log.warning("playback: %s", text))
        self.available = True

    def play(self, path: Path, start_s: float) -> bool:
        if self._player is None:
            return False
        url = QUrl.fromLocalFile(str(path))
        ms = int(max(0.0, start_s) * 1000)
        if self._player.source() != url:
            self._pending_ms = ms
            self._player.setSource(url)
        else:
            self._player.setPosition(ms)
        self._player.play()
        return True

    def requested_position_s(self) -> float | None:
        """Where playback was asked to start (or is now), in seconds; None before anything played."""
        if self._player is None or self._player.source().isEmpty():
            return None
        ms = self._pending_ms if self._pending_ms is not None else self._player.position()
        return ms / 1000.0

    def stop(self) -> None:
        if self._player is not None:
            self._player.stop()

    def _on_status(self, status) -> None:
        from PySide6.QtMultimedia import QMediaPlayer

        if status == QMediaPlayer.MediaStatus.LoadedMedia and self._pending_ms is not None:
            self._player.setPosition(self._pending_ms)
            self._pending_ms = None
