"""Training losses: KL to the teacher's top-k distribution, and layer-wise attention-output matching.

Why top-k with a remainder bucket: storing the full 51k-way distribution per position is
far too large for an on-disk cache, while the teacher's top 32 tokens carry nearly all of
its mass; the remainder keeps the KL a proper divergence between two distributions.

Why layer-wise matching: each converted module should reproduce what the stock module
would output *on the student's own inputs*. That target is cheap (the stock module is run
on the captured input), dense (every position and channel, not one next-token
distribution) and local, so it generalises from few windows where the end-to-end KL alone
overfits (docs/DESIGN.md section 4).
"""
from __future__ import annotations

import copy
import logging

import torch
from torch import nn

log = logging.getLogger(__name__)


def topk_kl(logits: torch.Tensor, topk_idx: torch.Tensor, topk_logp: torch.Tensor,
            temperature: float = 1.0) -> torch.Tensor:
    """Per-position KL(teacher || student), (n,) from (n, vocab) student logits and (n, k) teacher top-k.

    At temperature 1 the teacher's mass outside its top-k forms one extra bucket compared with
    the student's mass outside the same tokens. At another temperature the teacher's top-k
    are re-normalised among themselves (the remainder is unknown after tempering) and the
    loss is scaled by T^2 as in Hinton et al.
    """
    logp_s = torch.log_softmax(logits.float() / temperature, -1)
    ls = logp_s.gather(-1, topk_idx)
    lt = topk_logp.float()
    if temperature == 1.0:
        pt = lt.exp()
        kl = (pt * (lt - ls)).sum(-1)
        rest_t = (1.0 - pt.sum(-1)).clamp_min(1e-6)
        rest_s = (1.0 - ls.exp().sum(-1)).clamp_min(1e-6)
        return kl + rest_t * (rest_t.log() - rest_s.log())
    lt = torch.log_softmax(lt / temperature, -1)
    return (lt.exp() * (lt - ls)).sum(-1) * temperature**2


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-position cross-entropy to reference tokens (supervised fine-tuning)."""
    return nn.functional.cross_entropy(logits.float(), targets, reduction="none")


def causal_mask(length: int, device, dtype=torch.float32) -> torch.Tensor:
    """(1, 1, L, L) additive mask: works for both the eager and the SDPA attention functions."""
    m = torch.full((length, length), torch.finfo(dtype).min, device=device, dtype=dtype).triu(1)
    return m[None, None]


class AttentionMatcher:
    """Captures every converted decoder self-attention's input and output during the student's forward,
    then compares the output with what the stock module makes of the same input.

    `stock_modules[i]` is the teacher's (frozen) module for layer i; hooks stay installed
    until `close()`.
    """

    def __init__(self, student, teacher) -> None:
        from engine.mla.attention import MLAAttention

        self.pairs: list[tuple[nn.Module, nn.Module]] = []
        self.captured: list[tuple[torch.Tensor, torch.Tensor, nn.Module]] = []
        self.handles = []
        self.enabled = False
        for s_layer, t_layer in zip(student.model.decoder.layers, teacher.model.decoder.layers):
            if isinstance(s_layer.self_attn, MLAAttention) and not isinstance(t_layer.self_attn, MLAAttention):
                stock = copy.deepcopy(t_layer.self_attn).float().requires_grad_(False).eval()
                stock.to(next(student.parameters()).device)
                self.pairs.append((s_layer.self_attn, stock))
                self.handles.append(s_layer.self_attn.register_forward_hook(self._hook(stock), with_kwargs=True))

    def _hook(self, stock: nn.Module):
        def hook(module, args, kwargs, output):
            if self.enabled:
                x = args[0] if args else kwargs["hidden_states"]
                self.captured.append((x, output[0], stock))
        return hook

    def reset(self) -> None:
        self.captured = []

    def loss(self, position_mask: torch.Tensor) -> torch.Tensor:
        """Mean over layers of ||student - stock||^2 / ||stock||^2 on the masked (batch, L) positions."""
        if not self.captured:
            return torch.zeros(())
        total = 0.0
        for x, out, stock in self.captured:
            with torch.no_grad():
                target, _ = stock(x.detach().float(), attention_mask=causal_mask(x.shape[1], x.device))
            m = position_mask[..., None].to(out.dtype)
            err = ((out.float() - target) ** 2 * m).sum()
            ref = (target**2 * m).sum().clamp_min(1e-6)
            total = total + err / ref
        return total / len(self.captured)

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
