"""Whisper's log-mel features, computed in torch per 30 s window (batched, any device).

Same recipe as openai-whisper (Hann STFT, power spectrum, Slaney mel filters, log10, clamp
to 8 below the maximum, scale): the filters come from transformers' feature extractor so
80- and 128-bin models both work. Computing per window keeps memory bounded on long files.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_SECONDS = 30
N_SAMPLES = CHUNK_SECONDS * SAMPLE_RATE  # 480000 samples in a 30 s window
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 mel frames per window
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 100
INPUT_STRIDE = 2  # the encoder's second conv halves the frame rate
TIME_PRECISION = INPUT_STRIDE * HOP_LENGTH / SAMPLE_RATE  # 0.02 s per timestamp step / encoder frame


@functools.lru_cache(maxsize=4)
def _mel_filters(n_mels: int) -> torch.Tensor:
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(feature_size=n_mels)
    return torch.from_numpy(np.asarray(fe.mel_filters, dtype=np.float32).T.copy())  # (n_mels, n_freq)


@functools.lru_cache(maxsize=4)
def _window(device: str) -> torch.Tensor:
    return torch.hann_window(N_FFT, device=device)


def log_mel(audio: np.ndarray | torch.Tensor, n_mels: int = 80, device: str | torch.device = "cpu") -> torch.Tensor:
    """(batch, samples) or (samples,) float audio at 16 kHz -> (batch, n_mels, frames) features.

    Each row is padded/trimmed to exactly 30 s, as the encoder expects.
    """
    x = torch.as_tensor(audio, dtype=torch.float32)
    if x.ndim == 1:
        x = x[None]
    if x.shape[-1] < N_SAMPLES:
        x = torch.nn.functional.pad(x, (0, N_SAMPLES - x.shape[-1]))
    x = x[..., :N_SAMPLES].to(device)
    stft = torch.stft(x, N_FFT, HOP_LENGTH, window=_window(str(x.device)), return_complex=True)
    power = stft[..., :-1].abs() ** 2
    mel = _mel_filters(n_mels).to(x.device) @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    peak = log_spec.amax(dim=(-2, -1), keepdim=True)
    log_spec = torch.maximum(log_spec, peak - 8.0)
    return (log_spec + 4.0) / 4.0
