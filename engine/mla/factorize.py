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


def _cpu64(t: torch.Tensor) -> torch.Tensor:
    """All factorisation math runs on CPU in float64 (matrices are at most 2d x 2d)."""
    return t.detach().to("cpu", torch.float64)


def _regularised(m: torch.Tensor, eps: float) -> torch.Tensor:
    m = 0.5 * (m + m.T)
    n = m.shape[0]
    return m + eps * (torch.trace(m) / n) * torch.eye(n, dtype=m.dtype, device=m.device)


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(m)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def output_row_weight(
    w_q: torch.Tensor,
    b_q: torch.Tensor | None,
    w_o: torch.Tensor,
    num_heads: int,
    query_moment: torch.Tensor,
    query_mean: torch.Tensor,
    key_scale: float | torch.Tensor = 1.0,
    eps: float = 1e-4,
) -> torch.Tensor:
    """Block-diagonal (2d, 2d) row weight so errors are measured where they land.

    Key rows of head h are weighted by E[q_h q_h^T]^(1/2) (the error of a score is
    q_h . dk_h), value rows by (W_o,h^T W_o,h)^(1/2) (a value error reaches the residual
    stream through the output projection). `key_scale` (one number, or one per head, see
    `value_spread`) balances the two kinds of error.
    """
    d = w_q.shape[0]
    dh = d // num_heads
    wq, wo = _cpu64(w_q) * dh**-0.5, _cpu64(w_o)
    bq = (_cpu64(b_q) if b_q is not None else torch.zeros(d, dtype=torch.float64)) * dh**-0.5
    cross = torch.outer(wq @ _cpu64(query_mean), bq)
    q_moment = wq @ _cpu64(query_moment) @ wq.T + cross + cross.T + torch.outer(bq, bq)
    m = torch.zeros(2 * d, 2 * d, dtype=torch.float64)
    scales = torch.as_tensor(key_scale, dtype=torch.float64).expand(num_heads)
    for h in range(num_heads):
        sl = slice(h * dh, (h + 1) * dh)
        m[sl, sl] = float(scales[h]) * _sqrt_psd(_regularised(q_moment[sl, sl], eps))
        wo_h = wo[:, sl]
        m[d + h * dh : d + (h + 1) * dh, d + h * dh : d + (h + 1) * dh] = _sqrt_psd(_regularised(wo_h.T @ wo_h, eps))
    return m


def value_spread(w_v: torch.Tensor, w_o: torch.Tensor, num_heads: int, input_moment: torch.Tensor,
                 input_mean: torch.Tensor) -> torch.Tensor:
    """Per head, the RMS spread of W_o,h v_h over the calibration inputs (num_heads,).

    A score error ds on one token moves the head's output by about ds (u_j - mean u) with
    u = W_o,h v_h: a key error costs in proportion to how different the values it mixes
    are, so this is the natural per-head `key_scale` (convert's key_scale="auto"). Floored at
    1e-3 of the largest head's, so a head with constant values keeps an invertible weight.
    """
    d = w_v.shape[0]
    dh = d // num_heads
    mu = _cpu64(input_mean)
    cov = _cpu64(input_moment) - torch.outer(mu, mu)
    wv, wo = _cpu64(w_v), _cpu64(w_o)
    out = torch.empty(num_heads, dtype=torch.float64)
    for h in range(num_heads):
        sl = slice(h * dh, (h + 1) * dh)
        u = wo[:, sl] @ wv[sl]
        out[h] = torch.trace(u @ cov @ u.T).clamp_min(0).sqrt()
    return out.clamp_min(1e-3 * float(out.max()) + 1e-12)


@dataclass
class WeightedSVD:
    """The (weighted) SVD of one layer's [W_k; W_v]: truncate it to any rank with `truncate`."""

    u: torch.Tensor
    s: torch.Tensor  # singular values, descending: s[r:]**2 is what rank r loses, in the weighted norm
    vh: torch.Tensor
    chol: torch.Tensor | None  # L of the input second moment (calibrated), else None
    m: torch.Tensor | None  # the output row weight, else None
    k_rows: int  # rows of W_k in the factorised stack (d, or fewer when some key rows are kept exact)
    device: torch.device
    dtype: torch.dtype

    def truncate(self, rank: int) -> LowRankKV:
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        if rank > len(self.s):
            log.warning("rank %d > %d is no more exact than r=%d", rank, len(self.s), len(self.s))
            rank = len(self.s)
        if self.chol is None:
            down = self.vh[:rank]
        else:  # V_r^T L^{-1}: solve L^T X^T = V_r, i.e. X = (L^{-T} V_r)^T
            down = torch.linalg.solve_triangular(self.chol.T, self.vh[:rank].T, upper=True).T
        up = self.u[:, :rank] * self.s[:rank]
        if self.m is not None:
            up = torch.linalg.solve(self.m, up)
        energy = float((self.s[:rank] ** 2).sum() / (self.s**2).sum())
        cast = lambda t: t.to(self.device, self.dtype).contiguous()  # noqa: E731
        return LowRankKV(cast(down), cast(up[: self.k_rows]), cast(up[self.k_rows :]), energy)


def weighted_svd(
    w_k: torch.Tensor,
    w_v: torch.Tensor,
    second_moment: torch.Tensor | None = None,
    eps: float = 1e-4,
    row_weight: torch.Tensor | None = None,
    cross_moment: torch.Tensor | None = None,
) -> WeightedSVD:
    """SVD of M [w_k; w_v] L (M = `row_weight` or I, L L^T = regularised `second_moment` or I).

    `eps` regularises the second moment relative to its mean eigenvalue (trace / d), so
    directions never seen in calibration still get a little weight and L is invertible.
    `row_weight` (2d, 2d, invertible; see `output_row_weight`) measures the error of the
    outputs in a weighted norm; `truncate(r)` then sets W_up = M^{-1} U_r S_r.

    `cross_moment` E[x x~^T] is for inputs x~ that differ from the stock inputs x the
    weights were trained on (earlier layers already converted): `second_moment` is then
    E[x~ x~^T] = L L^T and the SVD is of M W E[x x~^T] L^{-T}, the rank-r map from x~ that
    best reproduces M W x (reduced-rank regression). The regulariser is added to both
    moments alike (as if some isotropic inputs had x~ = x), so with x~ = x it is the
    plain calibrated factorisation.
    """
    w = torch.cat([_cpu64(w_k), _cpu64(w_v)], dim=0)  # (2d, d), or fewer key rows
    m = _cpu64(row_weight) if row_weight is not None else None
    target = m @ w if m is not None else w
    chol = None
    if cross_moment is not None and second_moment is None:
        raise ValueError("cross_moment needs the second moment of the same (drifted) inputs")
    if second_moment is not None:
        sigma = _cpu64(second_moment)
        reg = _regularised(sigma, eps)
        chol = torch.linalg.cholesky(reg)  # sigma = L L^T
        if cross_moment is None:
            target = target @ chol
        else:  # M W E[x x~^T] L^{-T}, with the same regulariser added to E[x x~^T]
            cross = _cpu64(cross_moment) + (reg - 0.5 * (sigma + sigma.T))
            target = target @ torch.linalg.solve_triangular(chol, cross.T, upper=False).T
    u, s, vh = torch.linalg.svd(target, full_matrices=False)
    return WeightedSVD(u, s, vh, chol, m, w_k.shape[0], w_k.device, w_k.dtype)


def allocate_ranks(spectra: list[torch.Tensor], total: int, min_rank: int = 1) -> list[int]:
    """Ranks per layer summing to `total` that keep the most squared singular value overall.

    Each layer first gets `min_rank`; the rest of the budget goes to the largest remaining
    singular values across all layers (within a layer they are sorted, so every layer keeps
    a prefix). The spectra must be in one unit for this to mean anything: the output-weighted
    calibrated SVD measures every layer's error in the residual stream it writes to.
    """
    n = len(spectra)
    sizes = [len(s) for s in spectra]
    if not n or total < n * min_rank or total > sum(sizes):
        raise ValueError(f"cannot give {n} layers of sizes {sizes} a total rank of {total} (at least {min_rank} each)")
    ranks = [min(min_rank, size) for size in sizes]
    rest = total - sum(ranks)
    candidates = torch.cat([spectra[i][ranks[i]:].double() ** 2 for i in range(n)])
    owners = torch.cat([torch.full((sizes[i] - ranks[i],), i) for i in range(n)])
    if rest > 0:
        for i in owners[torch.topk(candidates, rest).indices].tolist():
            ranks[i] += 1
    return ranks
