"""Attention-mask handling shared by the MLA and exact-cross modules.

transformers 5.24 hands an attention module one of three things (see
`transformers.masking_utils.create_causal_mask`):

* None: the mask was skipped because plain causal (or no) masking is enough; the stock
  SDPA path then relies on `is_causal` when more than one query is present;
* a boolean tensor (batch|1, 1, q_len, kv_len), True = attend (sdpa implementation);
* an additive float tensor of the same shape, 0 or a large negative number (eager).

`masked_softmax` reproduces all three on scores of shape (batch, heads, q_len, kv_len).
"""
from __future__ import annotations

import torch


def causal_keep(q_len: int, kv_len: int, device: torch.device) -> torch.Tensor:
    """Boolean (q_len, kv_len) mask, True where query i (the last q_len positions) may attend."""
    offset = kv_len - q_len
    rows = torch.arange(q_len, device=device).unsqueeze(1) + offset
    cols = torch.arange(kv_len, device=device).unsqueeze(0)
    return cols <= rows


def masked_softmax(scores: torch.Tensor, attention_mask: torch.Tensor | None, is_causal: bool) -> torch.Tensor:
    """Softmax over the last axis after applying the mask; computed in float32 for half types."""
    q_len, kv_len = scores.shape[-2], scores.shape[-1]
    work = scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores
    if attention_mask is not None:
        if not isinstance(attention_mask, torch.Tensor):
            raise TypeError(f"MLA attention supports tensor masks only, got {type(attention_mask).__name__}")
        mask = attention_mask[..., :kv_len]
        if mask.dtype == torch.bool:
            work = work.masked_fill(~mask, torch.finfo(work.dtype).min)
        else:
            work = work + mask.to(work.dtype)
    elif is_causal and q_len > 1:
        keep = causal_keep(q_len, kv_len, scores.device)
        work = work.masked_fill(~keep, torch.finfo(work.dtype).min)
    return torch.softmax(work, dim=-1).to(scores.dtype)
