"""The default compressed cache: exact, made from the loaded stock weights in milliseconds.

Decoder self-attention reads keys and values from the same layer-normed input h
(K = W_k h, V = W_v h + b_v), so caching h itself is a latent of rank d with W_dkv = I,
W_uk = W_k and W_uv = W_v: half of stock's K + V per token, with no approximation and no
calibration audio. Cross-attention goes cache-free (`ExactCrossAttention`). Together they
are the exact mode (`--kv-cache exact`); the default (`--kv-cache compressed`) also holds
that latent in 8 bits (`engine.mla.latent_int8`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone

import torch
from torch import nn

from engine.mla.attention import MLAAttention
from engine.mla.config import MLAConfig, reduction_for_rank
from engine.mla.cross import ExactCrossAttention

log = logging.getLogger(__name__)


class ExactLatentAttention(MLAAttention):
    """Decoder self-attention that caches its input h (rank d) and up-projects with W_k, W_v."""

    @classmethod
    def shaped_like(cls, attn) -> "ExactLatentAttention":
        """The module's layout (q/out projections copied; k_up/v_up to be filled or loaded)."""
        mod = cls.like(attn, attn.embed_dim)
        mod.kv_down = nn.Identity()  # the latent is h itself: no product, nothing rounded
        return mod

    @classmethod
    def from_stock(cls, attn) -> "ExactLatentAttention":
        mod = cls.shaped_like(attn)
        with torch.no_grad():
            mod.k_up.weight.copy_(attn.k_proj.weight)
            mod.v_up.weight.copy_(attn.v_proj.weight)
            mod.v_up.bias.copy_(attn.v_proj.bias)
        return mod


def compress_exact(model, source: str = "") -> MLAConfig:
    """Give a stock `WhisperForConditionalGeneration` the exact compressed cache, in place."""
    if getattr(model, "mla_config", None) is not None:
        raise ValueError("model is already converted")
    layers = model.model.decoder.layers
    for layer in layers:
        layer.self_attn = ExactLatentAttention.from_stock(layer.self_attn)
        layer.encoder_attn = ExactCrossAttention.like(layer.encoder_attn)
    d = model.config.d_model
    cfg = MLAConfig(modules=("decoder-self",), ranks={"decoder-self": [d] * len(layers)}, init="exact",
                    kv_reduction=reduction_for_rank(d, d), exact_cross=True, source=source,
                    created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    model.mla_config = cfg
    log.info("compressed cache: %s", cfg.describe(d))
    return cfg


def kv_mode_text(cfg: MLAConfig, d_model: int, codec=None) -> str:
    """ModelInfo.kv_mode of a load-time mode: 'compressed (8-bit latent): ...' or 'compressed (exact): ...'.

    With the 8-bit latent (`codec`) the share is against stock's K + V in the model's dtype, scales included.
    """
    if codec is not None:
        held = codec.bytes_per_token()
        stock = 2 * d_model * torch.finfo(codec.rotation.dtype).bits // 8
        return (f"compressed (8-bit latent): mla decoder-self r={d_model} int8 "
                f"({100 * (1 - held / stock):.1f}% less than stock K+V) + exact cross")
    return f"compressed (exact): {cfg.describe(d_model)}"


@dataclass(frozen=True)
class AppliedCacheMode:
    """What `apply_cache_mode` made: the ModelInfo.kv_mode text and the record for ModelInfo.extra."""

    kv_mode: str
    mla: MLAConfig | None = None
    latent_int8: bool = False

    def extra(self) -> dict:
        if self.mla is None:
            return {}
        return {"mla": self.mla.to_dict(), **({"latent_int8": True} if self.latent_int8 else {})}


def apply_cache_mode(model, mode: str, source: str = "") -> AppliedCacheMode:
    """Give a loaded model the asked cache mode in place.

    "compressed": the exact latent held in 8 bits (the default); "exact": the same latent in
    the model's dtype (stock's transcript); "stock": left as transformers runs it. A model that
    is already MLA (a converted folder) keeps its ranks; "compressed" holds its latent in 8 bits too.
    """
    from engine.mla.latent_int8 import quantize_latent_caches

    cfg = getattr(model, "mla_config", None)
    d = model.config.d_model
    if cfg is not None:
        int8 = mode == "compressed" and quantize_latent_caches(model) > 0
        return AppliedCacheMode(cfg.describe() + (", latent int8" if int8 else ""), cfg, int8)
    if mode == "stock":
        return AppliedCacheMode("stock")
    cfg = compress_exact(model, source=source)
    int8 = mode == "compressed"
    if int8:
        quantize_latent_caches(model)
    codec = model.model.decoder.layers[0].self_attn.latent_codec
    return AppliedCacheMode(kv_mode_text(cfg, d, codec), cfg, int8)
