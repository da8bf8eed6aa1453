"""Activation statistics for calibrated conversion: the second moment of each attention input.

The model transcribes the calibration audio itself (greedy), then one teacher-forced pass
over its own transcript runs with forward pre-hooks on the attention modules that will be
converted, accumulating sum(x x^T) of their inputs (the layer-normed hidden states for
self-attention, the encoder output for cross-attention).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine.mla.decode import decode_prompt, greedy_decode

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
WINDOW_SAMPLES = 30 * SAMPLE_RATE
DEFAULT_CALIBRATION = Path(__file__).resolve().parents[2] / "assets" / "samples" / "jfk_inaugural_excerpt.flac"


@dataclass
class Moments:
    """Running sum of x x^T per (module kind, layer index)."""

    sums: dict[tuple[str, int], torch.Tensor] = field(default_factory=dict)
    counts: dict[tuple[str, int], int] = field(default_factory=dict)

    def add(self, key: tuple[str, int], x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).to(torch.float64)
        s = x.T @ x
        if key in self.sums:
            self.sums[key] += s
            self.counts[key] += x.shape[0]
        else:
            self.sums[key], self.counts[key] = s, x.shape[0]

    def second_moment(self, key: tuple[str, int]) -> torch.Tensor | None:
        if key not in self.sums:
            return None
        return self.sums[key] / max(1, self.counts[key])


def load_audio_16k(path: str | Path) -> np.ndarray:
    """16 kHz mono float32; the engine's loader when present, else a small PyAV fallback."""
    try:
        from engine.audio import load_audio  # the project's loader (lazy: optional at import time)
    except ImportError:
        load_audio = None
    if load_audio is not None:
        return np.asarray(load_audio(str(path)), dtype=np.float32)
    import av

    chunks = []
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def features_for_files(paths: list[str | Path], n_mels: int = 80, max_windows: int = 64) -> torch.Tensor:
    """(windows, n_mels, 3000) log-mel features of consecutive 30 s windows of each file."""
    from engine.features import log_mel

    windows = []
    for p in paths:
        audio = load_audio_16k(p)
        for start in range(0, max(1, len(audio)), WINDOW_SAMPLES):
            piece = audio[start : start + WINDOW_SAMPLES]
            if len(piece) < SAMPLE_RATE // 2 and start > 0:  # skip a trailing sliver under 0.5 s
                continue
            windows.append(piece)
    if len(windows) > max_windows:
        log.info("using the first %d of %d calibration windows", max_windows, len(windows))
        windows = windows[:max_windows]
    padded = np.zeros((len(windows), WINDOW_SAMPLES), dtype=np.float32)
    for i, w in enumerate(windows):
        padded[i, : len(w)] = w
    return log_mel(padded, n_mels=n_mels)


def _target_modules(model, kinds: tuple[str, ...]):
    dec, enc = model.model.decoder.layers, model.model.encoder.layers
    for kind in kinds:
        layers = enc if kind == "encoder-self" else dec
        for i, layer in enumerate(layers):
            yield kind, i, (layer.encoder_attn if kind == "cross" else layer.self_attn)


@torch.inference_mode()
def collect_moments(model, features: torch.Tensor, kinds: tuple[str, ...], batch_size: int = 4,
                    max_new_tokens: int = 224) -> Moments:
    """Second moments of the inputs of every attention module of the given kinds."""
    moments = Moments()
    param = next(model.parameters())
    prompt = decode_prompt(model)
    handles = []
    active = {"on": False}

    def make_hook(key, is_cross):
        def hook(module, args, kwargs):
            if not active["on"]:
                return
            x = kwargs.get("key_value_states") if is_cross else (args[0] if args else kwargs["hidden_states"])
            if x is not None:
                moments.add(key, x)
        return hook

    for kind, i, module in _target_modules(model, kinds):
        handles.append(module.register_forward_pre_hook(make_hook((kind, i), kind == "cross"), with_kwargs=True))
    try:
        for start in range(0, features.shape[0], batch_size):
            feats = features[start : start + batch_size].to(param.device, param.dtype)
            active["on"] = "encoder-self" in kinds
            enc = model.model.encoder(feats).last_hidden_state
            active["on"] = False
            result = greedy_decode(model, feats, prompt, max_new_tokens=max_new_tokens, encoder_output=enc)
            for row, toks in enumerate(result.tokens):  # teacher forcing on the model's own transcript
                ids = torch.tensor([prompt + toks], device=enc.device)
                active["on"] = True
                model.model.decoder(input_ids=ids, encoder_hidden_states=enc[row : row + 1], use_cache=False)
                active["on"] = False
    finally:
        for h in handles:
            h.remove()
    return moments
