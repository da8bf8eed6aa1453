"""Low-rank factorisation of a layer's stacked key/value projection [W_k; W_v] (2d x d).

* weight SVD (the paper's code): [W_k; W_v] = U S V^T, W_up = U_r S_r, W_down = V_r^T.
* calibrated (activation-aware): with the second moment of the layer's inputs
  E[x x^T] = L L^T, take the SVD of [W_k; W_v] L = U S V^T and set W_up = U_r S_r,
  W_down = V_r^T L^{-1}. This minimises E||[W_k; W_v] x - W_up W_down x||^2 over inputs
  like the calibration ones instead of treating every input direction as equally likely.

All singular values go to the up-projection (as in the paper). At r = d both are exact.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)


@dataclass
class LowRankKV:
    down: torch.Tensor  # W_dkv (r, d)
    k_up: torch.Tensor  # W_uk (d, r)
    v_up: torch.Tensor  # W_uv (d, r)
    energy: float  # fraction of the (weighted) squared singular values kept

    @property
    def rank(self) -> int:
        return self.down.shape[0]


def max_rank(d_model: int) -> int:
    """[W_k; W_v] is 2d x d: its rank is at most d, so r = d is already lossless."""
    return d_model


def factorize_kv(
    w_k: torch.Tensor,
    w_v: torch.Tensor,
    rank: int,
    second_moment: torch.Tensor | None = None,
    eps: float = 1e-4,
) -> LowRankKV:
    """Factorise [w_k; w_v] (each (d, d)) to rank `rank`; calibrated when `second_moment` is given.

    `eps` regularises the second moment relative to its mean eigenvalue (trace / d), so
    directions never seen in calibration still get a little weight and L is invertible.
    """
    d = w_k.shape[1]
    if rank > max_rank(d):
        log.warning("rank %d > d=%d is no more exact than r=d; using r=%d", rank, d, d)
        rank = max_rank(d)
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    w = torch.cat([w_k, w_v], dim=0).detach().to(torch.float64)  # (2d, d)
    if second_moment is None:
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        down = vh[:rank]
    else:
        sigma = second_moment.detach().to(torch.float64)
        sigma = 0.5 * (sigma + sigma.T)
        sigma = sigma + eps * (torch.trace(sigma) / d) * torch.eye(d, dtype=sigma.dtype, device=sigma.device)
        chol = torch.linalg.cholesky(sigma)  # lower, sigma = L L^T
        u, s, vh = torch.linalg.svd(w @ chol, full_matrices=False)
        # V_r^T L^{-1}: solve L^T X^T = V_r, i.e. X = (L^{-T} V_r)^T
        down = torch.linalg.solve_triangular(chol.T, vh[:rank].T, upper=True).T
    up = u[:, :rank] * s[:rank]
    energy = float((s[:rank] ** 2).sum() / (s**2).sum())
    dtype = w_k.dtype
    return LowRankKV(down.to(dtype).contiguous(), up[:d].to(dtype).contiguous(), up[d:].to(dtype).contiguous(), energy)
