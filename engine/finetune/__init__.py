"""Recover accuracy after MLA conversion: label-free distillation from the stock model, or supervised fine-tuning.

Public API (imported lazily so `import engine.finetune` stays cheap):

* `distill(student_dir, audio_paths, out_dir, options=None, progress=None, cancel=None, *, teacher=None,
  resume=False) -> FinetuneResult`
* `supervised(student_dir, labelled_dir, out_dir, options=None, progress=None, cancel=None, *, resume=False)`
* `finetune(...)`: both, by keyword; `FinetuneOptions`, `FinetuneProgress`, `FinetuneResult`, `CancelToken`.
* `finetune_soup(student_dir, out_dir, *, runs, options, ..., audio=... | labelled_dir=...) -> SoupResult`:
  the budget split into several runs (own seeds) whose weights are averaged;
  `recommended_runs(minutes)`: how many for a time budget (what the app uses).
* `labelled_pairs(folder)`, `LabelledFolderError`: the audio + same-stem .txt loader.
"""
from __future__ import annotations

from engine.lazy_exports import lazy_getattr

_EXPORTS = {
    "distill": "engine.finetune.trainer",
    "supervised": "engine.finetune.trainer",
    "finetune": "engine.finetune.trainer",
    "FinetuneOptions": "engine.finetune.trainer",
    "FinetuneProgress": "engine.finetune.trainer",
    "FinetuneResult": "engine.finetune.trainer",
    "finetune_soup": "engine.finetune.soup",
    "SoupResult": "engine.finetune.soup",
    "recommended_runs": "engine.finetune.budget",
    "CancelToken": "engine.cancel",
    "labelled_pairs": "engine.finetune.data",
    "LabelledFolderError": "engine.finetune.data",
}

__all__ = list(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
