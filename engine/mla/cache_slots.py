"""How MLA modules use a standard transformers cache, and exact byte accounting.

Contact surface with transformers 5.24 (pinned range >=5.24,<5.40):

* decoder layers receive an `EncoderDecoderCache` with `.self_attention_cache`,
  `.cross_attention_cache` (both `DynamicCache`) and `.is_updated[layer_idx]`;
* `DynamicCache.update(keys, values, layer_idx)` concatenates along dim -2 and returns the
  full tensors; `cache.layers[i].keys/.values` hold them; `reorder_cache(beam_idx)` and
  `get_seq_length()` (read from `keys.shape[-2]`) work on any tensor shapes.

An MLA layer stores its latent c as `keys` with shape (batch, 1, tokens, r) and a 0-width
tensor (batch, 1, tokens, 0) as `values`; held in 8 bits (`engine.mla.latent_int8`), `keys`
are the int8 codes and `values` the fp16 scales (batch, 1, tokens, r / group). Either way
sequence length, beam reordering, cropping and byte counting (`engine.kv_cache.cache_bytes`)
keep working and the bytes summed are exactly what is held.
"""
from __future__ import annotations

import torch
from transformers.cache_utils import Cache, EncoderDecoderCache

from engine.kv_cache import cache_bytes as kv_cache_bytes  # noqa: F401  (the one byte counter; re-exported)


def select_cache(cache: Cache | None, layer_idx: int | None, is_cross: bool) -> tuple[Cache | None, bool]:
    """The per-kind cache for this module and whether the cross entry is already filled.

    Mirrors `WhisperAttention.forward`: a cross module marks `is_updated` on first use.
    """
    if cache is None:
        return None, False
    if isinstance(cache, EncoderDecoderCache):
        is_updated = bool(cache.is_updated.get(layer_idx))
        if is_cross:
            cache.is_updated[layer_idx] = True
            return cache.cross_attention_cache, is_updated
        return cache.self_attention_cache, is_updated
    return cache, False


def store_latent(cache: Cache, latent: torch.Tensor, layer_idx: int, codec=None) -> torch.Tensor:
    """Append latent (batch, tokens, r) to the layer's cache; returns all cached (batch, T, r).

    With an `Int8LatentCodec` the tokens are stored as codes + scales and what comes back is
    the decoded *rotated* latent (the module reads it with rotated up-projections).
    """
    b, t, _ = latent.shape
    if codec is None:
        keys, _ = cache.update(latent.unsqueeze(1), latent.new_empty((b, 1, t, 0)), layer_idx)
        return keys.squeeze(1)
    codes, scales = codec.encode(latent)
    keys, values = cache.update(codes.unsqueeze(1), scales.unsqueeze(1), layer_idx)
    return codec.decode(keys.squeeze(1), values.squeeze(1), latent.dtype)


def cached_latent(cache: Cache, layer_idx: int, codec=None, dtype: torch.dtype | None = None) -> torch.Tensor:
    layer = cache.layers[layer_idx]
    if codec is None:
        return layer.keys.squeeze(1)
    return codec.decode(layer.keys.squeeze(1), layer.values.squeeze(1), dtype or codec.rotation.dtype)
