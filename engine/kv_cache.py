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
            total += value.numel() * value.element_size()
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
