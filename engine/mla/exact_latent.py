"""The default compressed cache: exact, made from the loaded stock weights in milliseconds.

Decoder self-attention reads keys and values from the same layer-normed input h
(K = W_k h, V = W_v h + b_v), so caching h itself is a latent of rank d with W_dkv = I,
W_uk = W_k and W_uv = W_v: half of stock's K + V per token, with no approximation and no
calibration audio. Cross-attention goes cache-free (`ExactCrossAttention`). Together they
are what every model runs unless the user picks stock (`--kv-cache compressed`).
"""
from __future__ import annotations

import logging
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


def kv_mode_text(cfg: MLAConfig, d_model: int) -> str:
    """ModelInfo.kv_mode of the default mode: says it is the compressed default and that it is exact."""
    return f"compressed (exact): {cfg.describe(d_model)}"

