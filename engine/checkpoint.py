"""Resume files: a transcription interrupted at 90% (crash, kill -9, power cut) continues there.

After every window the transcriber's resume point (segments so far, seek position, prompt
context) is written atomically next to the output, keyed by a fingerprint of the audio file
and of everything that changes the result (model, decoding options). The same command on
the same file with the same settings picks it up; anything else starts afresh.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

from engine.atomic import atomic_write_text
from engine.export import safe_stem, stem_for
from engine.transcribe import ResumePoint, TranscribeOptions

log = logging.getLogger(__name__)
FORMAT_VERSION = 2  # 2: batched runs resume by batch (lanes of VAD chunks), not by window start


def audio_fingerprint(path: Path) -> str:
    """Size, modification time and the first MiB: cheap, and changes when the file does."""
    st = path.stat()
    h = hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}".encode())
    with path.open("rb") as f:
        h.update(f.read(1 << 20))
    return h.hexdigest()[:24]


def settings_fingerprint(model: dict, options: TranscribeOptions) -> str:
    """Everything that changes the transcript: the model and the decoding options."""
    payload = json.dumps({"model": model, "options": dataclasses.asdict(options)}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


class Checkpoint:
    """The resume file of one audio file in one output folder (named after the exports' stem)."""

    def __init__(self, out_dir: Path, audio: Path, model: dict, options: TranscribeOptions,
                 stem: str | None = None):
        self.audio = Path(audio)
        self.path = Path(out_dir) / f".{safe_stem(stem or stem_for(str(audio)))}.whisper-mla-resume.json"
        self.key = {"version": FORMAT_VERSION, "audio": audio_fingerprint(self.audio),
                    "settings": settings_fingerprint(model, options)}

    def load(self) -> ResumePoint | None:
        """The saved resume point, or None when there is none or it belongs to another run."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.warning("ignoring unreadable resume file %s: %s", self.path, e)
            return None
        if data.get("key") != self.key:
            log.info("resume file %s is for another file version or other settings; starting afresh", self.path)
            return None
        try:
            return ResumePoint.from_dict(data["point"])
        except (KeyError, TypeError, ValueError) as e:
            log.warning("ignoring damaged resume file %s: %s", self.path, e)
            return None

    def save(self, point: ResumePoint) -> None:
        atomic_write_text(self.path, json.dumps({"key": self.key, "point": point.to_dict()}, ensure_ascii=False))

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
