"""Exact decoder cross-attention that caches nothing.

Stock Whisper caches K and V of all encoder frames in every decoder layer and every beam
(layers x beams x 1500 x 2d numbers per 30 s window). Here W_k is absorbed into the query
and W_v into the output projection, per head:

    scores_h = (W_k,h^T q_h) . enc        out = W_o [W_v,h (p_h enc) + b_v,h]_h + b_o

so every layer and beam attends over the encoder output directly (held once per window
anyway). It is the same function as stock attention up to float rounding: no
approximation, same parameters (q/k/v/out_proj), same state dict.

Cost per query token: h*S*d multiply-adds for the scores and the same again for the
context, against h*S*d_h for stock attention over cached K/V: more arithmetic, far less
memory and memory traffic. The encoder output need not be repeated for beams: given
(n, frames, d) for a decoder batch of n*g rows (g rows per window, repeat_interleave
order), or an `expand`ed view of one window, all rows, heads and queries of a window are
one matrix product against it (see `shares_encoder_output`).
"""
from __future__ import annotations

import logging

import torch
from transformers.models.whisper.modeling_whisper import WhisperAttention

from engine.mla.heads import per_head_matmul
from engine.mla.masking import masked_softmax

log = logging.getLogger(__name__)


class ExactCrossAttention(WhisperAttention):
    """Drop-in for a decoder `encoder_attn` module; leaves the cross-attention cache empty."""

    @classmethod
    def like(cls, attn: WhisperAttention) -> "ExactCrossAttention":
        w = attn.q_proj.weight
        mod = cls(attn.embed_dim, attn.num_heads, dropout=attn.dropout, is_decoder=attn.is_decoder,
                  bias=attn.v_proj.bias is not None, is_causal=False, layer_idx=attn.layer_idx, config=attn.config)
        mod.to(device=w.device, dtype=w.dtype)
        mod.train(attn.training)
        mod.load_state_dict(attn.state_dict())
        return mod

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        cache=None,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        kwargs.pop("past_key_values", None)
        if key_value_states is None:
            raise ValueError("ExactCrossAttention is a cross-attention module: key_value_states is required")
        if self.training:  # plain attention, no cache: gradients flow as in the stock module
            return super().forward(hidden_states, key_value_states, None, attention_mask, output_attentions, **kwargs)
        return self.attend(hidden_states, key_value_states, attention_mask, output_attentions)

    def attend(self, x: torch.Tensor, enc: torch.Tensor, attention_mask=None, output_attentions: bool = False):
        b, tq, d = x.shape
        h, dh = self.num_heads, self.head_dim
        q = self.q_proj(x).view(b, tq, h, dh).transpose(1, 2)  # (b, h, tq, dh)
        # W_k,h^T q_h, scaled, per head with the batch folded into the rows (weights read once)
        qa = per_head_matmul(q, self.k_proj.weight.view(h, dh, d), alpha=self.scaling).transpose(0, 1)
        n = enc.shape[0]
        if n == b and b > 1 and enc.stride(0) == 0:  # an expanded view of one window
            enc, n = enc[:1], 1
        if b % n:
            raise ValueError(f"decoder batch {b} is not a multiple of the encoder batch {n}")
        # rows i*g .. i*g+g-1 (g = b // n, repeat_interleave order) all attend over window i:
        # fold them, their heads and queries into one matrix product per window
        rows = qa.reshape(n, (b // n) * h * tq, d)
        scores = torch.bmm(rows, enc.transpose(1, 2)).view(b, h, tq, -1)
        probs = masked_softmax(scores, attention_mask, is_causal=False)
        ctx = torch.bmm(probs.view(n, -1, probs.shape[-1]), enc).view(b, h, tq, d)
        heads = per_head_matmul(ctx, self._v_heads_t()).permute(1, 2, 0, 3).reshape(b, tq, d)
        out = self.out_proj(heads + self._v_bias())
        return out, (probs if output_attentions else None)

    def _v_heads_t(self) -> torch.Tensor:
        """W_v per head, transposed: (h, d, d_h) view of v_proj.weight (no copy)."""
        h, dh = self.num_heads, self.head_dim
        return self.v_proj.weight.view(h, dh, self.embed_dim).transpose(1, 2)

    def _v_bias(self) -> torch.Tensor | int:
        return self.v_proj.bias if self.v_proj.bias is not None else 0


def shares_encoder_output(model) -> bool:
    """True when every decoder cross-attention is exact: pass the encoder output un-repeated.

    Then a decoder batch of n*g rows (g beams or samples per window, in repeat_interleave
    order) takes the (n, frames, d) encoder output as is; stock modules need it repeated.
    """
    layers = model.model.decoder.layers
    return len(layers) > 0 and all(isinstance(layer.encoder_attn, ExactCrossAttention) for layer in layers)
