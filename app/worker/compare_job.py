"""Worker side: stock vs MLA on one file through engine.compare.run_comparison, streamed live."""
from __future__ import annotations

from pathlib import Path

from app.model_choice import ModelChoice
from app.worker import protocol as P
from app.worker.conversion import is_mla_folder
from app.worker.memory_feed import sample_dict


def run(ctx, m: P.Msg) -> None:
    from engine.compare import run_comparison

    job = m["job"]
    choice = ModelChoice.from_dict(m.get("model"))
    ctx.feed_paused = True  # the comparison samples memory per run, labelled

    def stage(text: str) -> None:
        ctx.emit(P.STAGE, job, text=text)

    def on_sample(label, sample) -> None:
        ctx.emit(P.MEMORY, job, sample=sample_dict(sample), label=str(label))

    def on_segment(label, seg) -> None:
        ctx.emit(P.SEGMENT, job, segment=seg.to_dict(), label=str(label))

    def on_progress(label, p) -> None:
        ctx.emit(P.PROGRESS, job, done_s=p.done_s, total_s=p.total_s, elapsed_s=p.elapsed_s, label=str(label))

    models = mla_models(choice, m.get("models_dir"), stage)
    stage("Running stock Whisper, then Whisper-MLA")
    report = run_comparison(m["path"], stock_spec=choice.source, device=choice.device, beam_size=choice.beam_size,
                            on_sample=on_sample, on_segment=on_segment, on_progress=on_progress,
                            cancel=ctx.cancel_token(job), reference_text=m.get("reference"), **models)
    ctx.emit(P.COMPARED, job, report=report.to_dict())


def mla_models(choice: ModelChoice, models_dir: str | None, stage) -> dict:
    """The MLA side: a saved conversion when there is (or must be) one, else convert in process."""
    if is_mla_folder(choice.source):
        raise ValueError("The comparison needs a stock model: choose the original Whisper model "
                         "(the MLA side is converted from it)")
    if not choice.is_mla:  # a load-time mode (the default): made in process in milliseconds
        return {"kv_reduction": None, "cache_mode": choice.kv_cache}
    folder = Path(models_dir) / choice.conversion_name() if models_dir else None
    if folder is not None and is_mla_folder(str(folder)):
        return {"mla_spec": str(folder)}
    if choice.rank is None and not choice.exact_cross:
        return {"kv_reduction": float(choice.kv_reduction or 0.75)}  # fastest: no save, no second load
    if folder is None:
        raise ValueError("a custom MLA conversion needs a folder for converted models")
    from app.worker.model_cache import ModelCache

    return {"mla_spec": ModelCache.spec_for(choice, models_dir, stage)}
