"""The decoder's key/value cache: create it, reorder it for beams, and weigh it honestly.

The transcriber uses transformers' `EncoderDecoderCache` for stock and MLA models alike (an
MLA layer stores its latent where stock stores keys), so the bytes reported here are always
the sum of the tensors actually held, never a formula.
"""
from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from engine.results import KVCacheBytes


def new_cache() -> EncoderDecoderCache:
    return EncoderDecoderCache(DynamicCache(), DynamicCache())


def _layer_bytes(layer) -> int:
    """Bytes of every tensor a cache layer holds (keys, values and anything an MLA layer adds)."""
    seen: set[int] = set()
    total = 0
    for value in vars(layer).values():
        if isinstance(value, torch.Tensor) and value.numel() and id(value) not in seen:
            seen.add(id(value))
            total += value.nbytes
    return total


def _cache_bytes(cache) -> int:
    return sum(_layer_bytes(layer) for layer in getattr(cache, "layers", ()))


def cache_bytes(cache: EncoderDecoderCache | DynamicCache | None) -> KVCacheBytes:
    """Self- and cross-attention bytes currently held by `cache` (a lone cache counts as self)."""
    if cache is None:
        return KVCacheBytes()
    if not isinstance(cache, EncoderDecoderCache):
        return KVCacheBytes(self_attn=_cache_bytes(cache))
    return KVCacheBytes(self_attn=_cache_bytes(cache.self_attention_cache),
                        cross_attn=_cache_bytes(cache.cross_attention_cache))


def prefill_cross_cache(model, cache: EncoderDecoderCache, enc: torch.Tensor, group: int) -> bool:
    """Fill stock cross-attention K/V for `group` rows per window from `enc` (n, frames, d) once.

    Stock decoding projects the encoder output of every beam (or best-of sample) separately
    on the first step: `group` identical K/V computations per layer, about as much arithmetic
    as the rest of a 30 s window's decoding. Here each window's K/V is projected once and
    copied to its rows, so the cache holds exactly what stock Whisper holds (one copy per
    row, as the memory comparison expects). Returns False (and does nothing) when some
    layer's cross-attention is not stock `WhisperAttention` (MLA and exact-cross modules
    manage their own state).
    """
    from transformers.models.whisper.modeling_whisper import WhisperAttention

    layers = model.model.decoder.layers
    if not all(type(layer.encoder_attn) is WhisperAttention for layer in layers):
        return False
    n, frames, _ = enc.shape
    for i, layer in enumerate(layers):
        attn = layer.encoder_attn
        shape = (n, frames, attn.num_heads, attn.head_dim)
        k = attn.k_proj(enc).view(shape).transpose(1, 2).repeat_interleave(group, dim=0)
        v = attn.v_proj(enc).view(shape).transpose(1, 2).repeat_interleave(group, dim=0)
        cache.cross_attention_cache.update(k.contiguous(), v.contiguous(), attn.layer_idx)
        cache.is_updated[attn.layer_idx] = True
    return True
