"""Worker side: convert a model to MLA with engine.mla and save it as a model folder."""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from app.model_choice import ModelChoice

log = logging.getLogger(__name__)

MODULES = ("decoder-self",)  # the paper's recommended place; cross-attention goes via exact_cross


def is_mla_folder(spec: str) -> bool:
    from engine.mla import is_mla_dir

    p = Path(spec).expanduser()
    return p.is_dir() and is_mla_dir(p)


def convert_to_folder(choice: ModelChoice, out_dir: str | Path, stage: Callable[[str], None],
                      calibration: list[str] | None = None) -> tuple[Path, str]:
    """Load `choice.source` on the CPU in float32, convert (calibrated SVD), save; (folder, description).

    `calibration`: the user's recordings to calibrate on (the engine reads at most 32 min of
    them); without any, the bundled 11 s sample, which is enough at 75% but not at 87.5%.
    Deep reductions share the cache between the decoder layers by measured sensitivity
    (`convert_model(..., rank_allocation="auto")`).
    """
    from engine.mla import convert_model, save_mla_model
    from engine.model_sources import resolve_model

    stage(f"Loading {choice.source_text()} for conversion")
    loaded = resolve_model(choice.source, device="cpu")  # float32 on the CPU: the factorisation needs it
    if getattr(loaded.model, "mla_config", None) is not None:
        raise ValueError(f"{choice.source_text()} is already an MLA model")
    audio = [a for a in (calibration or []) if Path(a).is_file()] or None
    on = f"{len(audio)} of your recording{'s' if len(audio) != 1 else ''}" if audio else "the sample recording"
    stage(f"Calibrating on {on} and factorising ({choice.kv_text()})")
    cfg = convert_model(loaded.model, rank=choice.rank, kv_reduction=None if choice.rank else choice.kv_reduction,
                        modules=MODULES, init="calibrated", exact_cross=choice.exact_cross,
                        calibration_audio=audio, source=loaded.info.source,
                        rank_allocation="auto")
    stage("Saving the converted model")
    out = save_mla_model(loaded.model, cfg, out_dir, tokenizer=loaded.tokenizer, extra_files_from=loaded.folder)
    description = cfg.describe(loaded.model.config.d_model)
    log.info("converted %s -> %s (%s)", choice.source, out, description)
    return Path(out), description
