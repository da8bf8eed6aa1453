"""Multi-Head Latent Attention: a drop-in replacement for one Whisper attention module.

Per token only the latent c = W_dkv x (r numbers) is cached; keys and values are
up-projections K = W_uk c, V = W_uv c + b_v (Whisper's k_proj has no bias).

Two ways to compute the same thing:

* naive: up-project K and V for every cached token and run the model's own attention
  function (SDPA / eager). Used for training, for prompts without a cache (the encoder,
  teacher forcing) and as the reference in tests.
* absorbed (decoding with a cache, eval mode): W_uk goes into the query,
  scores_h = (W_uk,h^T q_h) . c, and W_uv into the output, out = W_o [W_uv,h (p_h c)]_h + ...;
  past tokens are never expanded back to K/V. The absorbed weights are prepared once and
  rebuilt when the parameters change (see `_Absorbed`). Per head the query can either go
  through a pre-multiplied (r x d) matrix ("fused") or through q_proj then W_uk,h^T
  ("factored"); "auto" picks the one with fewer multiply-adds per token
  (fused costs h*r*d, factored d*d + r*d).

Interface pinned to transformers 5.24 `WhisperAttention.forward(hidden_states,
key_value_states=None, cache=None, attention_mask=None, output_attentions=False, **kwargs)
-> (attn_output, attn_weights)`; the decoder layer discards the weights.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.whisper.modeling_whisper import WhisperAttention, eager_attention_forward

from engine.mla.cache_slots import cached_latent, select_cache, store_latent
from engine.mla.heads import per_head_matmul
from engine.mla.masking import masked_softmax

log = logging.getLogger(__name__)

Path = Literal["auto", "naive", "absorbed"]
Absorb = Literal["auto", "fused", "factored"]


@dataclass
class _Absorbed:
    """Weights of the absorbed decode path, in the module's dtype/device."""

    key: tuple
    fused: bool
    q_weight: torch.Tensor  # fused: (h*r, d); factored: W_uk per head (h, d_h, r); both incl. scaling
    q_bias: torch.Tensor | None  # fused only: (h*r,)
    o_weight: torch.Tensor  # fused: (d, h*r) = W_o W_uv per head; factored: W_uv^T per head (h, r, d_h)
    o_bias: torch.Tensor  # W_o b_v + b_o (the value bias passes through the output projection)


def _version(t: torch.Tensor) -> int:
    """In-place modification counter (inference-mode tensors have none and cannot change outside it)."""
    try:
        return t._version
    except RuntimeError:
        return -1


class MLAAttention(WhisperAttention):
    """Latent attention for one layer: decoder self-attention, cross-attention or encoder self-attention.

    Subclasses `WhisperAttention` only so transformers' output recorders (output_attentions)
    still find it; it has its own parameters (no k_proj / v_proj) and its own forward.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        rank: int,
        *,
        is_decoder: bool = False,
        is_causal: bool = False,
        layer_idx: int | None = None,
        config=None,
        dropout: float = 0.0,
    ) -> None:
        nn.Module.__init__(self)  # not WhisperAttention.__init__: that would allocate k_proj/v_proj
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads, self.rank = embed_dim, num_heads, rank
        self.head_dim = embed_dim // num_heads
        self.scaling = self.head_dim**-0.5
        self.is_decoder, self.is_causal, self.layer_idx = is_decoder, is_causal, layer_idx
        self.config, self.dropout = config, dropout
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=True)
        self.kv_down = nn.Linear(embed_dim, rank, bias=False)  # W_dkv
        self.k_up = nn.Linear(rank, embed_dim, bias=False)  # W_uk
        self.v_up = nn.Linear(rank, embed_dim, bias=True)  # W_uv, b_v
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=True)
        self.path: Path = "auto"
        self.absorb: Absorb = "auto"
        self._absorbed: _Absorbed | None = None
        self.latent_codec = None  # an engine.mla.latent_int8.Int8LatentCodec: the cache in 8 bits

    @classmethod
    def like(cls, attn: WhisperAttention, rank: int) -> "MLAAttention":
        """An MLA module shaped like `attn` (q/out projections copied, latent weights uninitialised)."""
        w = attn.q_proj.weight
        mod = cls(attn.embed_dim, attn.num_heads, rank, is_decoder=attn.is_decoder, is_causal=attn.is_causal,
                  layer_idx=attn.layer_idx, config=attn.config, dropout=attn.dropout)
        mod.to(device=w.device, dtype=w.dtype)
        mod.train(attn.training)
        with torch.no_grad():
            mod.q_proj.load_state_dict(attn.q_proj.state_dict())
            mod.out_proj.load_state_dict(attn.out_proj.state_dict())
        return mod

    @classmethod
    def from_factors(cls, attn: WhisperAttention, low) -> "MLAAttention":
        """An MLA module replacing stock `attn` with the factors `low` (`LowRankKV`: down, k_up, v_up)."""
        mla = cls.like(attn, low.rank)
        with torch.no_grad():
            mla.kv_down.weight.copy_(low.down)
            mla.k_up.weight.copy_(low.k_up)
            mla.v_up.weight.copy_(low.v_up)
            mla.v_up.bias.copy_(attn.v_proj.bias)
        return mla

    def extra_repr(self) -> str:
        return f"d={self.embed_dim}, heads={self.num_heads}, rank={self.rank}, causal={self.is_causal}"

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        cache=None,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if "past_key_values" in kwargs and cache is None:  # old name, still accepted by 5.24
            cache = kwargs.pop("past_key_values")
        is_cross = key_value_states is not None
        layer_cache, is_updated = select_cache(cache, self.layer_idx, is_cross)
        codec = self.latent_codec if layer_cache is not None else None
        if is_cross and layer_cache is not None and is_updated:
            latent = cached_latent(layer_cache, self.layer_idx, codec, hidden_states.dtype)
        else:
            source = key_value_states if is_cross else hidden_states
            latent = self.kv_down(source)
            if layer_cache is not None:
                latent = store_latent(layer_cache, latent, self.layer_idx, codec)
        use_absorbed = self.path == "absorbed" or (self.path == "auto" and layer_cache is not None and not self.training)
        if use_absorbed:
            return self._absorbed_attention(hidden_states, latent, attention_mask, output_attentions, is_cross, codec)
        if codec is not None:  # the naive path up-projects every token: back to the latent's own basis
            latent = codec.unrotate(latent)
        return self._naive_attention(hidden_states, latent, attention_mask, output_attentions, **kwargs)

    def _naive_attention(self, x, latent, attention_mask, output_attentions, **kwargs):
        b, tq, _ = x.shape
        q = (self.q_proj(x) * self.scaling).view(b, tq, -1, self.head_dim).transpose(1, 2).contiguous()
        kv_shape = (latent.shape[0], -1, self.num_heads, self.head_dim)
        k = self.k_up(latent).view(kv_shape).transpose(1, 2).contiguous()
        v = self.v_up(latent).view(kv_shape).transpose(1, 2).contiguous()
        impl = getattr(self.config, "_attn_implementation", None) or "eager"
        attention: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(impl, eager_attention_forward)
        out, weights = attention(self, q, k, v, attention_mask, dropout=self.dropout if self.training else 0.0,
                                 scaling=1.0, output_attentions=output_attentions, **kwargs)
        return self.out_proj(out.reshape(b, tq, -1).contiguous()), weights

    def _absorbed_attention(self, x, latent, attention_mask, output_attentions, is_cross, codec=None):
        b, tq, _ = x.shape
        h, r = self.num_heads, self.rank
        w = self.absorbed_weights(codec)
        if w.fused:
            qa = nn.functional.linear(x, w.q_weight, w.q_bias).view(b, tq, h, r).transpose(1, 2)
        else:  # per head, the batch folded into the rows (no per-row copy of the weights)
            q = self.q_proj(x).view(b, tq, h, self.head_dim).transpose(1, 2)
            qa = per_head_matmul(q, w.q_weight).transpose(0, 1)  # (b, h, tq, r)
        # every head attends over the same latent: one batched matmul with heads folded into rows
        scores = torch.bmm(qa.reshape(b, h * tq, r), latent.transpose(1, 2)).view(b, h, tq, -1)
        probs = masked_softmax(scores, attention_mask, self.is_causal and not is_cross)
        ctx = torch.bmm(probs.view(b, h * tq, -1), latent).view(b, h, tq, r)
        if w.fused:
            out = nn.functional.linear(ctx.transpose(1, 2).reshape(b, tq, h * r), w.o_weight, w.o_bias)
        else:
            heads = per_head_matmul(ctx, w.o_weight).permute(1, 2, 0, 3).reshape(b, tq, self.embed_dim)
            out = nn.functional.linear(heads, self.out_proj.weight, w.o_bias)
        return out, (probs if output_attentions else None)

    # ------------------------------------------------------- absorbed weights
    def use_fused(self) -> bool:
        if self.absorb != "auto":
            return self.absorb == "fused"
        d, h, r = self.embed_dim, self.num_heads, self.rank
        return h * r * d < d * d + r * d

    def absorbed_weights(self, codec=None) -> _Absorbed:
        """The absorbed weights; with a codec, for reading its rotated latent (W_uk R, W_uv R)."""
        params = (self.q_proj.weight, self.q_proj.bias, self.k_up.weight, self.v_up.weight, self.v_up.bias,
                  self.out_proj.weight, self.out_proj.bias)
        fused = self.use_fused()
        key = (fused, id(codec)) + tuple((p.data_ptr(), _version(p), p.dtype, p.device) for p in params)
        if self._absorbed is None or self._absorbed.key != key:
            self._absorbed = self._build_absorbed(key, fused, codec)
        return self._absorbed

    @torch.no_grad()
    def _build_absorbed(self, key: tuple, fused: bool, codec=None) -> _Absorbed:
        d, h, dh, r = self.embed_dim, self.num_heads, self.head_dim, self.rank
        dtype = self.q_proj.weight.dtype
        f32 = lambda t: t.detach().float()  # noqa: E731 - products in fp32, stored in the module dtype
        up = (lambda w: codec.rotated_up_weight(f32(w))) if codec is not None else f32  # noqa: E731
        uk = up(self.k_up.weight).view(h, dh, r)
        uv = up(self.v_up.weight).view(h, dh, r)
        o_bias = f32(self.out_proj.weight) @ f32(self.v_up.bias) + f32(self.out_proj.bias)
        cast = lambda t: t.to(dtype).contiguous()  # noqa: E731
        if not fused:
            return _Absorbed(key, False, cast(uk * self.scaling), None, cast(uv.transpose(1, 2)), cast(o_bias))
        wq = f32(self.q_proj.weight).view(h, dh, d)
        bq = f32(self.q_proj.bias).view(h, dh)
        q_weight = (torch.einsum("hdr,hde->hre", uk, wq) * self.scaling).reshape(h * r, d)
        q_bias = (torch.einsum("hdr,hd->hr", uk, bq) * self.scaling).reshape(h * r)
        wo = f32(self.out_proj.weight).view(d, h, dh)
        o_weight = torch.einsum("ehd,hdr->ehr", wo, uv).reshape(d, h * r)
        return _Absorbed(key, True, cast(q_weight), cast(q_bias), cast(o_weight), cast(o_bias))
