"""Messages between the GUI and the worker process: plain dicts with a "type" and a "job" id.

Dicts (not classes) keep both sides decoupled and every message picklable. Engine objects
travel as their `to_dict()` shapes. Requests go GUI -> worker, events worker -> GUI.
"""
from __future__ import annotations

from typing import Any

Msg = dict[str, Any]

# requests (GUI -> worker)
TRANSCRIBE = "transcribe"  # job, path, model (ModelChoice dict), models_dir
CONVERT = "convert"  # job, model, out_dir, calibration [paths] (may be empty: the bundled sample)
COMPARE = "compare"  # job, path, model, models_dir
PRELOAD = "preload"  # model, models_dir: load the model ahead of the first job
FINETUNE = "finetune"  # job, model_dir (an MLA folder), audio [paths], out_dir, options {FinetuneOptions fields}
SHUTDOWN = "shutdown"

# events (worker -> GUI)
HELLO = "hello"  # pid, gpu {available, name, reason}, bundled {name: installed}
STAGE = "stage"  # job, text: what the worker is doing ("Loading model", "Converting to MLA"); fraction (0-1) or absent
MODEL = "model"  # job, info (ModelInfo dict), device
SEGMENT = "segment"  # job, segment (Segment dict), label (comparison run) or None
PROGRESS = "progress"  # job, done_s, total_s, elapsed_s, label
LANGUAGE = "language"  # job, language (code), probability (None when given, or an English-only model), task
MEMORY = "memory"  # job (or None when idle), sample {t, rss, kv, kv_self, kv_cross, gpu_used, gpu_total}, label
DONE = "done"  # job, transcript (Transcript dict)
CANCELLED = "cancelled"  # job, transcript (partial, may be None), hard (killed)
ERROR = "error"  # job, message (readable), detail (traceback text)
CONVERTED = "converted"  # job, folder, description
COMPARED = "compared"  # job, report (ComparisonReport dict)
FINETUNED = "finetuned"  # job, folder, description, stopped ("steps", "minutes", "early-stop", "cancelled", ...)

FINAL = frozenset({DONE, CANCELLED, ERROR, CONVERTED, COMPARED, FINETUNED})


def msg(kind: str, job: int | None = None, **fields: Any) -> Msg:
    return {"type": kind, "job": job, **fields}
