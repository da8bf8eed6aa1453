"""Whisper-MLA: Multi-Head Latent Attention for Whisper (arXiv 2603.00563).

Public API (imported lazily so `import engine.mla` stays cheap and free of cycles):

* `convert_model(model, rank=None, kv_reduction=None, modules=("decoder-self",), init="calibrated",
  calibration_features=None, exact_cross=False, *, compensate=True, keep_key_dims=0, ...) -> MLAConfig`:
  in-place conversion (layer by layer, each decoder layer fitted behind the converted ones;
  `keep_key_dims` gives the paper's layout of exact key dimensions beside the latent).
* `save_mla_model(model, cfg, out_dir, tokenizer=..., feature_extractor=...)`,
  `load_mla_model(path, device, dtype) -> (model, MLAConfig)`, `is_mla_dir(path)`.
* `kv_cache_bytes(cache) -> KVCacheBytes`: bytes of the tensors a decoder cache holds.
* `shares_encoder_output(model)`: True when the decoder takes the encoder output un-repeated
  for beams (exact cross-attention everywhere).
* `MLAAttention`, `ExactCrossAttention`, `MLAConfig`, `set_attention_path`.
"""
from __future__ import annotations

from engine.lazy_exports import lazy_getattr

_EXPORTS = {
    "MLAConfig": "engine.mla.config",
    "MLAAttention": "engine.mla.attention",
    "ExactCrossAttention": "engine.mla.cross",
    "shares_encoder_output": "engine.mla.cross",
    "convert_model": "engine.mla.convert",
    "apply_structure": "engine.mla.convert",
    "set_attention_path": "engine.mla.convert",
    "save_mla_model": "engine.mla.storage",
    "load_mla_model": "engine.mla.storage",
    "load_mla_config": "engine.mla.storage",
    "is_mla_dir": "engine.mla.storage",
    "kv_cache_bytes": "engine.mla.cache_slots",
}

__all__ = list(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
