"""Several short fine-tuning runs, averaged into one model (a "model soup").

Why: with a few minutes of one voice to learn from, the model a run ends with depends on its
crop plan and training order. tiny.en at 87.5% KV reduction, trained 2 minutes on LJ Speech
+ JFK with eight seeds, read 16.42 to 17.62% WER on the 36 LibriSpeech utterances (stock
15.10); averages of four, four and eight of those runs read 16.42, 16.82 and 16.69%: near or
below their members' mean and never at their worst (README). The members all start from the
same converted weights and train briefly, so their average is a good model itself.

The budget (minutes or steps) is split evenly between the runs; run i uses seed
`options.seed + i` (its own crops, held-aside part and order) and writes its best weights to
`<out>.run<i>` (checkpoints in `<out>.run<i>.finetune`), so an interrupted soup resumes
with the member it stopped in and keeps the finished ones.
How many runs a time budget should make: `engine.finetune.budget.recommended_runs`.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file

from engine.cancel import CancelToken
from engine.finetune.trainer import FinetuneOptions, ProgressCallback, finetune

log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"


@dataclass
class SoupResult:
    out_dir: Path | None  # None when cancelled before every member finished (unless keep_partial)
    member_dirs: list[Path]
    members: list[dict]  # each member's training record (mla_config.json "training")
    stopped: str  # "done" or "cancelled"
    train_seconds: float = 0.0
    skipped: list[int] = field(default_factory=list)  # members reused from an earlier, interrupted soup


def member_dir(out_dir: Path, index: int) -> Path:
    return out_dir.with_name(f"{out_dir.name}.run{index + 1}")


def member_options(options: FinetuneOptions, runs: int, index: int) -> FinetuneOptions:
    """Run `index`'s share of the budget and its own seed."""
    share = {"minutes": options.minutes / runs} if options.minutes else \
        {"steps": max(1, math.ceil((options.steps or 300) / runs))}
    return dataclasses.replace(options, seed=options.seed + index, snapshot_minutes=(), **share)


def _finished_record(folder: Path, seed: int) -> dict | None:
    """The training record of a member that finished with this seed, else None."""
    try:
        training = json.loads((folder / "mla_config.json").read_text(encoding="utf-8")).get("training") or {}
    except (OSError, ValueError):
        return None
    if not (folder / WEIGHTS).is_file() or training.get("stopped") in (None, "", "cancelled"):
        return None
    return training if training.get("options", {}).get("seed") == seed else None


def average_weights(folders: list[Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean (in float32, stored back in each tensor's own type) of the folders' weights."""
    states = [load_file(str(f / WEIGHTS)) for f in folders]
    keys = set(states[0])
    for f, s in zip(folders[1:], states[1:]):
        if set(s) != keys:
            raise ValueError(f"{f}: not the same model as {folders[0]} (different weights)")
    out = {}
    for k in states[0]:
        t = states[0][k]
        out[k] = (sum(s[k].float() for s in states) / len(states)).to(t.dtype) if t.is_floating_point() else t
    return out


def finetune_soup(student_dir: str | Path, out_dir: str | Path, *, runs: int, options: FinetuneOptions | None = None,
                  progress: ProgressCallback | None = None, cancel: CancelToken | None = None, resume: bool = False,
                  on_member: Callable[[int, int], None] | None = None, keep_partial: bool = False,
                  **data) -> SoupResult:
    """`runs` fine-tuning runs of `student_dir` (see `engine.finetune.finetune`; `data` is its audio= or
    labelled_dir=, teacher=), averaged into `out_dir`.

    Cancelled, it returns without `out_dir` (the members stay for `resume`); with
    `keep_partial` it first averages the members trained so far, the cancelled one's best
    weights included when it took a step, so a cancel still ends in a usable model (the app).
    """
    if runs < 2:
        raise ValueError("a soup needs at least 2 runs")
    opt = options or FinetuneOptions()
    out_dir = Path(out_dir)
    dirs, records, skipped = [], [], []
    for i in range(runs):
        folder, m_opt = member_dir(out_dir, i), member_options(opt, runs, i)
        if on_member is not None:
            on_member(i, runs)
        done = _finished_record(folder, m_opt.seed) if resume else None
        if done is not None:
            log.info("soup member %d/%d already finished in %s", i + 1, runs, folder)
            dirs.append(folder)
            records.append(done)
            skipped.append(i)
            continue
        res = finetune(student_dir, folder, options=m_opt, progress=progress, cancel=cancel,
                       resume=resume and (folder.with_name(folder.name + ".finetune")).is_dir(), **data)
        dirs.append(folder)
        records.append(res.training)
        if res.stopped == "cancelled":
            trained = [(d, r) for d, r in zip(dirs, records) if int(r.get("steps", 0)) > 0]
            out = None
            if keep_partial and trained:
                out = _write_average(student_dir, out_dir, [d for d, _ in trained], [r for _, r in trained], runs, opt,
                                     "cancelled")
            return SoupResult(out, dirs, records, "cancelled", _train_seconds(records), skipped)
    out = _write_average(student_dir, out_dir, dirs, records, runs, opt, "done")
    return SoupResult(out, dirs, records, "done", _train_seconds(records), skipped)


def _train_seconds(records: list[dict]) -> float:
    return round(sum(float(r.get("train_seconds", 0)) for r in records), 1)


def _write_average(student_dir, out_dir: Path, dirs: list[Path], records: list[dict], runs: int,
                   opt: FinetuneOptions, stopped: str) -> Path:
    """The members' mean weights as a model folder at `out_dir`, its training record listing them."""
    from engine.mla.storage import load_mla_model, save_mla_model

    model, cfg = load_mla_model(dirs[0], device="cpu", dtype=torch.float32)
    averaged = average_weights(dirs)
    loaded = model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in averaged.items()},
                                   strict=False)  # tied weights (proj_out) are stored once
    if loaded.unexpected_keys:
        raise ValueError(f"{dirs[0]}: weights {loaded.unexpected_keys[:3]} do not belong to its model")
    first = records[0]
    training = {
        "method": first.get("method"), "teacher": first.get("teacher"), "data": first.get("data"),
        "audio_seconds": first.get("audio_seconds"),
        "soup": {"runs": runs, "members": [
            {k: r.get(k) for k in ("steps", "best_step", "train_seconds", "stopped", "held_out_final")}
            | {"seed": r.get("options", {}).get("seed"), "folder": d.name} for r, d in zip(records, dirs)]},
        "steps": sum(int(r.get("steps", 0)) for r in records),
        "train_seconds": _train_seconds(records),
        "stopped": stopped, "trainable": first.get("trainable"), "options": first.get("options"),
        "from": str(student_dir),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    new_cfg = dataclasses.replace(cfg, training=training)
    model.mla_config = new_cfg
    out = save_mla_model(model, new_cfg, out_dir, extra_files_from=dirs[0], dtype=getattr(torch, opt.save_dtype))
    log.info("average of %d of %d runs written to %s", len(dirs), runs, out)
    return Path(out)
