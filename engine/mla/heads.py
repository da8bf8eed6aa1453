"""Per-head matrix products without copying the weights once per batch row.

`torch.matmul(x, w)` with x (b, h, t, k) and per-head weights w (h, k, n) broadcasts w to
(b, h, k, n) and materialises it: at batch 64 on large-v3 shapes that copied 105-210 MB of
weights per layer and step, half of the GPU time of a decode step with the exact
cross-attention (H200 profile, docs/measurements/gpu-s8). Folding the batch into the rows
instead makes it one batched product over the heads that reads each weight once.
"""
from __future__ import annotations

import torch


def per_head_matmul(x: torch.Tensor, w: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """alpha * x_h @ w_h for every head: x (b, h, t, k), w (h, k, n) -> (h, b, t, n).

    The result is head-major (a `.transpose(0, 1)` gives (b, h, t, n) as a view); callers
    reshape it into whatever layout their next product wants.
    """
    b, h, t, k = x.shape
    rows = x.transpose(0, 1).reshape(h, b * t, k)  # a view when b == 1 or x is head-major already
    if alpha == 1.0:
        out = torch.bmm(rows, w)
    else:
        out = torch.baddbmm(rows.new_zeros(()), rows, w, beta=0.0, alpha=alpha)
    return out.view(h, b, t, w.shape[-1])
