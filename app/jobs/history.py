"""Finished transcripts kept across restarts: the queue shows them again, with the user's corrections.

One JSON file per finished job in the history folder (the transcript in its export shape plus
what the queue shows), written atomically whenever the job finishes or is edited; removing a
job from the list forgets it. The newest `limit` jobs are kept.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path

from app.jobs.job import Job, Status
from engine.atomic import atomic_write_text
from engine.export import transcript_from_dict

log = logging.getLogger(__name__)
FORMAT = 1


class JobHistory:
    def __init__(self, folder: Path, limit: int = 200) -> None:
        self.folder = Path(folder)
        self.limit = limit

    def save(self, job: Job) -> bool:
        """Remember a finished job (again, after an edit); False (logged) when the folder is not writable."""
        if job.transcript is None or job.status is not Status.DONE:
            return False
        if not job.history_key:
            job.history_key = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"  # sorts by finish time
        record = {"format": FORMAT, "path": str(job.path), "duration_s": job.duration_s, "model_label": job.model_label,
                  "exports": [str(p) for p in job.saved], "transcript": job.transcript.to_dict()}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self._file(job.history_key), json.dumps(record, ensure_ascii=False))
        except OSError as e:
            log.warning("could not keep %s in the history folder %s: %s", job.name, self.folder, e)
            return False
        self._prune()
        return True

    def forget(self, job: Job) -> None:
        if job.history_key:
            self._file(job.history_key).unlink(missing_ok=True)

    def load(self) -> list[Job]:
        """The remembered jobs, oldest first, as finished jobs; unreadable records are skipped (logged)."""
        jobs = []
        for path in self._records():
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
                transcript = transcript_from_dict(record["transcript"])
                job = Job(Path(record["path"]), model_label=str(record.get("model_label") or transcript.model.name),
                          status=Status.DONE,
                          duration_s=record.get("duration_s"), fraction=1.0, transcript=transcript,
                          segments=list(transcript.segments), saved=[Path(p) for p in record.get("exports", [])],
                          history_key=path.stem, task=transcript.task, language=transcript.language,
                          language_probability=transcript.language_probability)
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.warning("skipping the unreadable history record %s: %s", path, e)
                continue
            jobs.append(job)
        return jobs

    def _file(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def _records(self) -> list[Path]:
        try:
            return sorted(self.folder.glob("*.json"), key=lambda p: p.name)
        except OSError:
            return []

    def _prune(self) -> None:
        records = self._records()
        for path in records[:max(0, len(records) - self.limit)]:
            path.unlink(missing_ok=True)
