"""Training checkpoints: everything a resumed run needs, safetensors + JSON, replaced atomically.

A checkpoint folder holds the trainable weights now (`weights.safetensors`), the best
weights seen on the held-out windows (`best.safetensors`), their running average when the
run keeps one (`ema.safetensors`), AdamW's moments
(`optimizer.safetensors`) and `state.json` (step, training seconds, best metric, eval
history, a fingerprint of the run's settings and data). It is written into a temporary
folder and swapped in with renames, so a crash at any moment leaves the previous complete
checkpoint (as `checkpoint` or, mid-swap, `checkpoint.old`), losing at most one interval.
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

NAME = "checkpoint"
FORMAT = 1


@dataclass
class TrainState:
    step: int = 0
    train_seconds: float = 0.0
    best_metric: float | None = None
    best_step: int = 0
    evals: list[dict[str, Any]] = field(default_factory=list)
    fingerprint: str = ""
    stale_evals: int = 0


def _flat_optimizer(optimizer: torch.optim.Optimizer, names: dict[int, str]) -> dict[str, torch.Tensor]:
    out = {}
    for p, st in optimizer.state.items():
        name = names[id(p)]
        for k, v in st.items():
            out[f"{k}::{name}"] = (v if torch.is_tensor(v) else torch.tensor(float(v))).detach().cpu().contiguous()
    return out


def save_checkpoint(folder: str | Path, params: dict[str, torch.nn.Parameter], best: dict[str, torch.Tensor],
                    optimizer: torch.optim.Optimizer, state: TrainState,
                    ema: dict[str, torch.Tensor] | None = None) -> Path:
    """Write `folder/checkpoint` atomically; returns its path."""
    from safetensors.torch import save_file

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    final, old = root / NAME, root / f"{NAME}.old"
    tmp = Path(tempfile.mkdtemp(prefix=f".{NAME}.", dir=root))
    try:
        save_file({n: p.detach().cpu().contiguous() for n, p in params.items()}, str(tmp / "weights.safetensors"))
        save_file({n: t.detach().cpu().contiguous() for n, t in best.items()}, str(tmp / "best.safetensors"))
        if ema is not None:
            save_file({n: t.detach().cpu().contiguous() for n, t in ema.items()}, str(tmp / "ema.safetensors"))
        names = {id(p): n for n, p in params.items()}
        save_file(_flat_optimizer(optimizer, names), str(tmp / "optimizer.safetensors"))
        (tmp / "state.json").write_text(json.dumps({"format": FORMAT, **state.__dict__}, indent=1), encoding="utf-8")
        if old.exists():
            shutil.rmtree(old)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("checkpoint at step %d -> %s", state.step, final)
    return final


def find_checkpoint(folder: str | Path) -> Path | None:
    root = Path(folder)
    for name in (NAME, f"{NAME}.old"):
        if (root / name / "state.json").is_file():
            return root / name
    return None


def load_checkpoint(path: Path, params: dict[str, torch.nn.Parameter], optimizer: torch.optim.Optimizer
                    ) -> tuple[TrainState, dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """Restore weights and optimizer moments in place; returns the state, the best weights and the
    weight average (None when the run kept none)."""
    from safetensors.torch import load_file

    meta = json.loads((path / "state.json").read_text(encoding="utf-8"))
    if meta.pop("format", None) != FORMAT:
        raise ValueError(f"{path}: checkpoint format not understood")
    state = TrainState(**meta)
    weights = load_file(str(path / "weights.safetensors"))
    if set(weights) != set(params):
        raise ValueError(f"{path}: checkpoint holds other trainable weights than this run "
                         f"(different --trainable or model?)")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(weights[n].to(p.device, p.dtype))
    best = {n: t.to(params[n].device) for n, t in load_file(str(path / "best.safetensors")).items()}
    ema = None
    if (path / "ema.safetensors").is_file():
        ema = {n: t.to(params[n].device) for n, t in load_file(str(path / "ema.safetensors")).items()}
    flat = load_file(str(path / "optimizer.safetensors"))
    for n, p in params.items():
        st = {k.split("::", 1)[0]: v.to(p.device) for k, v in flat.items() if k.split("::", 1)[1] == n}
        if st:
            optimizer.state[p] = st
    return state, best, ema
