"""The paper's layout: a few key dimensions per head cached exactly beside a smaller joint latent.

Whisper-MLA's public code (like MHA2MLA for its RoPE dimensions) keeps `n` key dimensions of
every head uncompressed and factorises the remaining key rows together with all value rows.
Written as one MLA latent of size r = r_joint + heads * n, that is a structured
initialisation of the plain layout: the down-projection stacks the joint down-projection and
the kept W_k rows, the key up-projection is the joint one on the other rows and an identity
on the kept ones, and the value up-projection ignores the kept part. So the attention
module, the cache (still exactly r numbers per token), the absorbed decode path and
save/load are unchanged, and fine-tuning is free to leave the structure.
"""
from __future__ import annotations

import logging

import torch

from engine.mla.factorize import LowRankKV, _cpu64, weighted_svd

log = logging.getLogger(__name__)

KEY_SELECTIONS = ("norm", "uniform")


def dim_energies(w_q: torch.Tensor, b_q: torch.Tensor | None, w_k: torch.Tensor,
                 query_moment: torch.Tensor | None = None, query_mean: torch.Tensor | None = None,
                 kv_moment: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(E[q_j^2], E[k_j^2]) for every query/key row j: from input moments when given, else the
    squared row norms of the weights (every input direction alike)."""
    wq, wk = _cpu64(w_q), _cpu64(w_k)
    if query_moment is None or kv_moment is None:
        return (wq**2).sum(1), (wk**2).sum(1)
    bq = _cpu64(b_q) if b_q is not None else torch.zeros(wq.shape[0], dtype=torch.float64)
    mean = _cpu64(query_mean) if query_mean is not None else torch.zeros(wq.shape[1], dtype=torch.float64)
    q = ((wq @ _cpu64(query_moment)) * wq).sum(1) + 2 * bq * (wq @ mean) + bq**2
    k = ((wk @ _cpu64(kv_moment)) * wk).sum(1)
    return q.clamp_min(0), k.clamp_min(0)


def select_kept_key_dims(num_heads: int, head_dim: int, per_head: int, how: str = "norm",
                         q_energy: torch.Tensor | None = None, k_energy: torch.Tensor | None = None) -> list[int]:
    """Rows of W_k (head-major) to keep exact: `per_head` in every head.

    "uniform": evenly spaced dimensions; "norm": per head, the largest sqrt(E q_j^2 E k_j^2),
    the 2-norm criterion MHA2MLA uses to pick its RoPE dimensions (the dimensions whose
    query-key products contribute most to the scores).
    """
    if how not in KEY_SELECTIONS:
        raise ValueError(f"key selection must be one of {', '.join(KEY_SELECTIONS)}, got {how!r}")
    if not 1 <= per_head < head_dim:
        raise ValueError(f"kept key dimensions per head must be in 1..{head_dim - 1}, got {per_head}")
    rows: list[int] = []
    for h in range(num_heads):
        if how == "uniform":
            picks = [int(j * head_dim // per_head) for j in range(per_head)]
        else:
            if q_energy is None or k_energy is None:
                raise ValueError("norm selection needs the query and key energies")
            sl = slice(h * head_dim, (h + 1) * head_dim)
            score = (q_energy[sl] * k_energy[sl]).sqrt()
            picks = sorted(torch.topk(score, per_head).indices.tolist())
        rows += [h * head_dim + j for j in picks]
    return rows


def kept_key_factors(w_k: torch.Tensor, w_v: torch.Tensor, kept: list[int], rank: int,
                     second_moment: torch.Tensor | None = None, eps: float = 1e-4,
                     row_weight: torch.Tensor | None = None, cross_moment: torch.Tensor | None = None) -> LowRankKV:
    """A latent of `rank` numbers per token: len(kept) exact key rows + a joint latent of the rest.

    The joint part is `weighted_svd` of [W_k without the kept rows; W_v] (with the row weight
    restricted to those rows), truncated to rank - len(kept).
    """
    joint_rank = rank - len(kept)
    if joint_rank < 1:
        raise ValueError(f"rank {rank} leaves no joint latent beside {len(kept)} kept key dimensions")
    kept_set = set(kept)
    rest = [j for j in range(w_k.shape[0]) if j not in kept_set]
    weight = None
    if row_weight is not None:
        idx = torch.tensor(rest + [w_k.shape[0] + j for j in range(w_v.shape[0])])
        weight = _cpu64(row_weight)[idx][:, idx]
    low = weighted_svd(w_k[rest], w_v, second_moment, eps=eps, row_weight=weight,
                       cross_moment=cross_moment).truncate(joint_rank)
    dev, dt = w_k.device, w_k.dtype
    n = len(kept)
    down = torch.cat([low.down, w_k[kept].detach().to(dt)], dim=0)
    k_up = torch.zeros(w_k.shape[0], low.rank + n, device=dev, dtype=dt)
    k_up[rest, : low.rank] = low.k_up
    k_up[kept, low.rank + torch.arange(n)] = 1.0
    v_up = torch.zeros(w_v.shape[0], low.rank + n, device=dev, dtype=dt)
    v_up[:, : low.rank] = low.v_up
    log.debug("kept %d key rows exact, joint rank %d (energy %.4f)", n, low.rank, low.energy)
    return LowRankKV(down.contiguous(), k_up, v_up, low.energy)
