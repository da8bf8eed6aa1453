"""Share a fixed KV budget between decoder layers by each layer's measured sensitivity.

Why: decoder layers are not equally hurt by a small latent. On tiny.en at 87.5% the first
decoder layer collapses below rank 128 (KL to stock 0.24 at rank 96, 0.014 at 128) while
layers 1 and 2 lose almost nothing at rank 48; giving the first layer more and the middle
ones less at the same total cache cut the LibriSpeech concat's WER from 20.4% to 14.8%
(README). Singular values alone do not show this (they miss how errors propagate), so it
is measured: for each layer and each rank of a grid around the uniform rank, only that
layer is converted (calibrated, independent fit) and the next-token distributions of the
calibration sequences are compared with stock's (KL). The split with the least summed KL
whose ranks add up to at most the uniform total is then found exactly (a small knapsack).

Cost: layers x grid (7) teacher-forced decoder passes over the calibration sequences;
stock's distributions are kept as their top `top_k` tokens (plus the mass of the rest), so
memory stays small.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from engine.mla.attention import MLAAttention
from engine.mla.calibrate import ForcedSequence
from engine.mla.factorize import WeightedSVD

log = logging.getLogger(__name__)

GRID_FACTORS = (0.5, 2 / 3, 5 / 6, 1.0, 4 / 3, 5 / 3, 2.0)  # x the uniform rank
# From this KV reduction on, the product measures the split by default (`recommended_allocation`).
# Measured on tiny.en with LJ Speech + JFK calibration: at 87.5% WER 24.6 / 20.4 / 6.9% ->
# 20.1 / 14.8 / 7.6% (utterances / LibriSpeech concat / LJ Speech); at 75% the measured split
# read 14.4 / 13.2 / 5.1% with the bundled sample's calibration (uniform 14.7 / 14.7 / 6.0%) but
# dropped a stretch of the LJ Speech reading with LJ + JFK calibration (14.4% there against
# 6.0%): not reliable enough to leave the uniform default at 75%.
DEEP_REDUCTION = 0.85
GRID_STEP = 8  # grid ranks are multiples of this (when the uniform rank is)
TOP_K = 32  # stock tokens kept per position for the KL (the rest of stock's mass is negligible)


@dataclass
class RankSplit:
    """The measured table and the split chosen from it (recorded in `mla_config.json`)."""

    grid: list[int]
    kl: list[list[float]]  # kl[layer][j]: KL to stock with only that layer at rank grid[j]
    ranks: list[int]  # the chosen rank of each layer
    uniform_rank: int

    def summed_kl(self, ranks: Sequence[int]) -> float:
        return float(sum(self.kl[i][self.grid.index(r)] for i, r in enumerate(ranks)))

    def as_record(self) -> dict:
        return {"grid": list(self.grid), "kl": [[round(v, 6) for v in row] for row in self.kl],
                "ranks": list(self.ranks), "summed_kl": round(self.summed_kl(self.ranks), 6),
                "summed_kl_uniform": round(self.summed_kl([self.uniform_rank] * len(self.kl)), 6)}


def recommended_allocation(kv_reduction: float) -> str:
    """The product's default rank allocation for a KV reduction: measured split when deep, else uniform."""
    return "sensitivity" if kv_reduction >= DEEP_REDUCTION else "uniform"


def sensitivity_grid(rank: int, max_rank: int) -> list[int]:
    """Ranks to try for one layer: from half to twice the uniform rank, never above `max_rank`."""
    step = GRID_STEP if rank % GRID_STEP == 0 and rank >= 2 * GRID_STEP else 1
    grid = {min(max_rank, max(step, step * round(rank * f / step))) for f in GRID_FACTORS}
    grid.add(min(rank, max_rank))
    return sorted(grid)


def choose_split(kl: Sequence[Sequence[float]], grid: Sequence[int], budget: int) -> list[int]:
    """Per-layer ranks from `grid` with the least summed KL and sum(ranks) <= budget (exact search)."""
    unit = math.gcd(*grid)
    cap = budget // unit
    best: dict[int, tuple[float, list[int]]] = {0: (0.0, [])}  # units used -> (summed KL, ranks so far)
    for row in kl:
        nxt: dict[int, tuple[float, list[int]]] = {}
        for used, (total, ranks) in best.items():
            for r, v in zip(grid, row):
                u = used + r // unit
                if u > cap:
                    continue
                cand = (total + float(v), ranks + [r])
                if u not in nxt or cand[0] < nxt[u][0]:
                    nxt[u] = cand
        if not nxt:
            raise ValueError(f"no split of {len(kl)} layers from ranks {list(grid)} fits a total of {budget}")
        best = nxt
    return min(best.values(), key=lambda c: c[0])[1]


class _StockReference:
    """Stock's next-token distributions on the calibration sequences, as top-k log-probabilities."""

    def __init__(self, model, sequences: list[ForcedSequence], top_k: int) -> None:
        self.sequences = sequences
        self.top: list[tuple[torch.Tensor, torch.Tensor]] = []
        for seq in sequences:
            logp = _log_probs(model, seq)
            values, index = logp.topk(min(top_k, logp.shape[-1]), dim=-1)
            self.top.append((values, index))

    def kl(self, model) -> float:
        """Weighted mean over positions of KL(stock || model) on stock's top tokens + one bucket for the rest.

        The coarsened KL is never negative and never above the full one (a truncated sum alone can be).
        """
        num = den = 0.0
        for seq, (lp, index) in zip(self.sequences, self.top):
            lq = _log_probs(model, seq).gather(-1, index)
            p_rest = (1 - lp.exp().sum(-1)).clamp_min(1e-12)
            q_rest = (1 - lq.exp().sum(-1)).clamp_min(1e-12)
            per_position = (lp.exp() * (lp - lq)).sum(-1) + p_rest * (p_rest.log() - q_rest.log())
            num += seq.weight * float(per_position.sum())
            den += seq.weight * per_position.numel()
        return num / max(den, 1e-12)


def _log_probs(model, seq: ForcedSequence) -> torch.Tensor:
    ids = torch.tensor([seq.tokens], device=seq.encoder_output.device)
    hidden = model.model.decoder(input_ids=ids, encoder_hidden_states=seq.encoder_output,
                                 use_cache=False).last_hidden_state
    return torch.log_softmax(model.proj_out(hidden).float(), dim=-1)[0]


@torch.inference_mode()
def measure_split(model, sequences: list[ForcedSequence], svd_for_layer: Callable[[int], WeightedSVD],
                  rank: int, max_rank: int, *, top_k: int = TOP_K,
                  progress: Callable[[int, int], None] | None = None) -> RankSplit:
    """Measure every decoder layer's sensitivity on `sequences` and choose the split of `rank` x layers.

    `model` is stock (its decoder self-attention is swapped one layer at a time and put back);
    `svd_for_layer(i)` gives layer i's calibrated factorisation on stock inputs.
    """
    layers = model.model.decoder.layers
    grid = sensitivity_grid(rank, max_rank)
    was_training = model.training
    model.eval()
    try:
        reference = _StockReference(model, sequences, top_k)
        table: list[list[float]] = []
        for i, layer in enumerate(layers):
            stock_attn = layer.self_attn
            svd = svd_for_layer(i)
            row = []
            try:
                for r in grid:
                    layer.self_attn = MLAAttention.from_factors(stock_attn, svd.truncate(r))
                    row.append(reference.kl(model))
            finally:
                layer.self_attn = stock_attn
            table.append(row)
            log.info("layer %d sensitivity (KL by rank %s): %s", i, grid, ", ".join(f"{v:.4g}" for v in row))
            if progress is not None:
                progress(i + 1, len(layers))
    finally:
        model.train(was_training)
    ranks = choose_split(table, grid, rank * len(layers))
    split = RankSplit(grid, table, ranks, rank)
    log.info("rank split %s: summed KL %.4g (uniform %d: %.4g)", ranks, split.summed_kl(ranks), rank,
             split.summed_kl([rank] * len(layers)))
    return split
