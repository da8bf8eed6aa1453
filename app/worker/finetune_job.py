"""Worker side: fine-tune an MLA model on the user's own recordings (label-free distillation).

The stock model the folder was converted from is the teacher; the engine caches its
transcripts, checkpoints as it goes, and on cancel writes the best weights so far, so a
cancelled run still ends in a usable model folder.
"""
from __future__ import annotations

import dataclasses

from app.formatting import duration
from app.worker import protocol as P


def progress_text(p) -> tuple[str, float | None]:
    """One line for the task row, and the fraction done when it is known."""
    if p.phase == "teacher":
        frac = p.step / p.total_steps if p.total_steps else None
        return f"Teacher transcribing your audio: {p.step}/{p.total_steps or '?'} pieces", frac
    parts = [f"Fine-tuning: step {p.step}" + (f"/{p.total_steps}" if p.total_steps else "")]
    if p.loss is not None:
        parts.append(f"loss {p.loss:.3f}")
    if p.agreement is not None:
        parts.append(f"agreement with stock {100 * p.agreement:.1f}%")
    if p.eta_s is not None:
        parts.append(f"{duration(p.eta_s)} left")
    frac = None
    if p.total_steps:
        frac = min(1.0, p.step / p.total_steps)
    elif p.eta_s is not None and p.elapsed_s > 0:
        frac = p.elapsed_s / (p.elapsed_s + p.eta_s)
    return ", ".join(parts), frac


def run(ctx, m: P.Msg) -> None:
    """One run (`distill`), or with options["runs"] > 1 several averaged into one model (`finetune_soup`)."""
    from engine.finetune import FinetuneOptions, distill, finetune_soup

    job = m["job"]
    given = dict(m.get("options") or {})
    runs = int(given.pop("runs", 1) or 1)
    known = {f.name for f in dataclasses.fields(FinetuneOptions)}
    options = FinetuneOptions(**{k: v for k, v in given.items() if k in known})
    ctx.emit(P.STAGE, job, text="Loading the model and its stock teacher")
    member = {"index": 0}
    recordings = f"{len(m['audio'])} recording{'s' if len(m['audio']) != 1 else ''}"

    def report(p) -> None:
        text, frac = progress_text(p)
        if runs > 1 and p.phase != "teacher":  # the bar spans every run; the text says which one
            text = f"Run {member['index'] + 1}/{runs}: {text}"
            frac = (member["index"] + frac) / runs if frac is not None else None
        fields = {"fraction": frac} if frac is not None else {}
        ctx.emit(P.STAGE, job, text=text, **fields)

    cancel = ctx.cancel_token(job)
    if runs <= 1:
        result = distill(m["model_dir"], m["audio"], m["out_dir"], options, progress=report, cancel=cancel)
        agreement = (result.best or {}).get("agreement")
        description = f"{result.steps} steps on {recordings}"
        if agreement is not None:
            description += f", agreement with stock {100 * agreement:.1f}%"
        ctx.emit(P.FINETUNED, job, folder=str(result.out_dir), description=description, stopped=result.stopped)
        return
    soup = finetune_soup(m["model_dir"], m["out_dir"], runs=runs, options=options, progress=report, cancel=cancel,
                         on_member=lambda i, k: member.update(index=i), keep_partial=True, audio=list(m["audio"]))
    if soup.out_dir is None:
        raise RuntimeError("fine-tuning was cancelled before it trained a step; no model was written")
    trained = [r for r in soup.members if int(r.get("steps", 0)) > 0]
    description = (f"average of {len(trained)} run{'s' if len(trained) != 1 else ''}, "
                   f"{sum(int(r.get('steps', 0)) for r in trained)} steps on {recordings}")
    ctx.emit(P.FINETUNED, job, folder=str(soup.out_dir), description=description, stopped=soup.stopped)
