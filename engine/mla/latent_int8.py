"""The latent cache in 8 bits: rotated, int8 codes with one fp16 scale per group of channels.

Why a rotation: Whisper's layer-normed decoder inputs (the exact latent) carry a few
outlier channels, and one absmax scale per token then leaves the other channels with few
levels (measured in docs/measurements/latent-int8-2026-12-07: plain per-token int8 moves
7.6% of the words of the long LibriSpeech file; rotated, 0%). A fixed orthonormal rotation
spreads every outlier over all channels first. The rotation is never applied to
the cached tokens again: the codes stay rotated, and the up-projections that read them are
rotated once instead (`rotated_up_weight`), so a step costs one r x r product per *new*
token and one dequantisation of the cache.

Layout in a transformers `DynamicCache` layer: `keys` holds the codes (batch, 1, tokens, r)
int8 and `values` the scales (batch, 1, tokens, r / group) fp16, so beam reordering, cropping
and `engine.kv_cache.cache_bytes` see exactly the bytes held, scales included.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

GROUP = 64  # channels per scale: 2 bytes of scale per 64 bytes of codes (3%)
_QMAX = 127.0
_MIN_SCALE = torch.finfo(torch.float16).tiny


def rotation(n: int) -> torch.Tensor:
    """A fixed orthonormal n x n rotation (float64): the Q of a seeded Gaussian's QR.

    A dense random rotation spreads any outlier direction over all channels (plain and
    sign-randomised Hadamard matrices did worse on the dev sets: the measurement's README).
    The codes never leave the process, so only orthonormality matters, not the exact matrix.
    """
    gen = torch.Generator().manual_seed(20261207)
    q, r = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def group_for(rank: int, preferred: int = GROUP) -> int:
    """The largest divisor of `rank` not above `preferred` (every scale covers whole channels)."""
    return max(g for g in range(1, min(rank, preferred) + 1) if rank % g == 0)


@dataclass
class Int8LatentCodec:
    """Encodes new latent tokens into codes + scales and decodes a whole cached latent."""

    rotation: torch.Tensor  # (r, r), the module's dtype and device
    group: int

    @classmethod
    def for_rank(cls, rank: int, dtype: torch.dtype, device: torch.device | str) -> "Int8LatentCodec":
        return cls(rotation(rank).to(device=device, dtype=dtype), group_for(rank))

    @property
    def rank(self) -> int:
        return self.rotation.shape[0]

    def encode(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """latent (..., r) -> codes int8 (..., r) of the rotated latent and fp16 scales (..., r / group)."""
        rotated = (latent @ self.rotation).float()
        grouped = rotated.unflatten(-1, (-1, self.group))
        # fp16's smallest normal as the floor: an all-zero group must not divide by a scale rounded to 0
        scales = (grouped.abs().amax(-1) / _QMAX).clamp_min(_MIN_SCALE).to(torch.float16)
        codes = torch.round(grouped / scales.float().unsqueeze(-1)).clamp_(-_QMAX, _QMAX).to(torch.int8)
        return codes.flatten(-2), scales

    def decode(self, codes: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The rotated latent (..., r) in `dtype`; read it with `rotated_up_weight` weights."""
        grouped = codes.unflatten(-1, (-1, self.group)).to(dtype)  # a new tensor: scaled in place
        return grouped.mul_(scales.to(dtype).unsqueeze(-1)).flatten(-2)

    def unrotate(self, rotated: torch.Tensor) -> torch.Tensor:
        """Back to the latent's own basis (for paths that up-project every token: not the decode step)."""
        return rotated @ self.rotation.transpose(0, 1)

    def rotated_up_weight(self, up: torch.Tensor) -> torch.Tensor:
        """W (out, r) -> W R: up-projects the rotated latent to what W gives on the latent."""
        return up @ self.rotation.to(up.dtype)

    def bytes_per_token(self) -> int:
        return self.rank + 2 * (self.rank // self.group)


def quantize_latent_caches(model) -> int:
    """Hold every decoder MLA latent of `model` in 8 bits from now on; returns how many modules.

    Works on the exact default latent and on converted ranks alike (a converted 75% model
    then holds an eighth of stock fp16's K + V). The weights are left as they are.
    """
    from engine.mla.attention import MLAAttention

    codecs: dict[tuple, Int8LatentCodec] = {}  # one per rank: the QR and the r x r matrix once, not per layer
    count = 0
    for layer in model.model.decoder.layers:
        for attn in (layer.self_attn, layer.encoder_attn):
            if isinstance(attn, MLAAttention):
                w = attn.q_proj.weight
                key = (attn.rank, w.dtype, w.device)
                if key not in codecs:
                    codecs[key] = Int8LatentCodec.for_rank(attn.rank, w.dtype, w.device)
                attn.latent_codec = codecs[key]
                count += 1
    log.info("latent cache in 8 bits for %d attention modules", count)
    return count
