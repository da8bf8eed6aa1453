"""Worker side: an explicit "Convert to MLA" job from the model panel."""
from __future__ import annotations

from app.model_choice import ModelChoice
from app.worker import protocol as P
from app.worker.conversion import convert_to_folder


def run(ctx, m: P.Msg) -> None:
    job = m["job"]
    choice = ModelChoice.from_dict(m.get("model"))
    folder, description = convert_to_folder(choice, m["out_dir"], lambda text: ctx.emit(P.STAGE, job, text=text),
                                            calibration=m.get("calibration"))
    ctx.emit(P.CONVERTED, job, folder=str(folder), description=description)


def preload(ctx, m: P.Msg) -> None:
    """Load the model before the first job so that job starts at once."""
    choice = ModelChoice.from_dict(m.get("model"))
    loaded = ctx.models.get(choice, m.get("models_dir"), lambda text: ctx.emit(P.STAGE, None, text=text))
    ctx.emit(P.MODEL, None, info=loaded.info.to_dict(), device=str(loaded.device), loads=ctx.models.loads)
