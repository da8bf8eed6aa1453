"""Calibration rows weighted by the attention each token receives (convert's attention_mix).

A token's key and value errors cost in proportion to the attention it receives; the
start-of-transcript token draws most of it in deep decoder layers, so a plain average
(every token 1/T) under-weighs exactly the rows that matter most.
"""
from __future__ import annotations

import copy

import pytest
import torch
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperAttention

from engine.mla import convert_model
from engine.mla.calibrate import Moments, collect_moments, features_for_files, received_attention
from engine.mla.rank_split import _StockReference

D, HEADS, T = 16, 4, 12
CLIP = "1089-134686-0000.flac"  # 10 s of real speech, 30-odd tokens


def _attention(seed: int = 0) -> WhisperAttention:
    torch.manual_seed(seed)
    cfg = WhisperConfig(d_model=D, decoder_attention_heads=HEADS, encoder_attention_heads=HEADS)
    cfg._attn_implementation = "eager"
    return WhisperAttention(D, HEADS, bias=True, is_decoder=True, is_causal=True, config=cfg).eval()


def test_received_attention_is_the_column_sum_of_the_layers_own_weights():
    attn = _attention()
    x = 3.0 * torch.randn(1, T, D)
    causal = torch.full((T, T), float("-inf")).triu(1).view(1, 1, T, T)
    with torch.no_grad():
        _, probs = attn(x, attention_mask=causal, output_attentions=True)  # (1, heads, T, T), transformers' own
    want = probs[0].sum(1).mean(0)
    got = received_attention(attn, x)
    assert torch.allclose(got, want, atol=1e-5)
    assert abs(float(got.sum()) - T) < 1e-4  # every query spreads a mass of 1
    assert float(got[0]) > float(got[-1])  # the first token is seen by every query, the last by one
    half = received_attention(attn, x, mix=0.5)
    assert torch.allclose(half, 0.5 + 0.5 * want, atol=1e-5)
    assert torch.allclose(received_attention(attn, x, mix=0.0), torch.ones(T))


def test_row_weights_are_a_weighted_average():
    x = torch.randn(50, D, dtype=torch.float64)
    w = torch.rand(50, dtype=torch.float64) * 2
    moments = Moments()
    moments.add(("k",), x, 2.0, row_weights=w)
    moments.add(("k",), x[:10], 1.0)
    total = 2.0 * w.sum() + 10
    want = (2.0 * (x * w[:, None]).T @ x + x[:10].T @ x[:10]) / total
    assert torch.allclose(moments.second_moment(("k",)), want)
    assert torch.allclose(moments.mean(("k",)), (2.0 * (x * w[:, None]).sum(0) + x[:10].sum(0)) / total)


@pytest.fixture(scope="module")
def feats(data_dir, tiny):
    return features_for_files([data_dir / CLIP], n_mels=tiny.model.config.num_mel_bins)


def test_attention_mix_is_recorded_and_exact_at_full_rank(tiny, feats):
    model = copy.deepcopy(tiny.model)
    cfg = convert_model(model, rank=tiny.model.config.d_model, calibration_features=feats, attention_mix=1.0)
    assert cfg.init_options["attention_mix"] == 1.0
    seqs = []
    collect_moments(tiny.model, feats, ("decoder-self",), keep_sequences=seqs)
    with torch.inference_mode():
        assert _StockReference(tiny.model, seqs, 32).kl(model) < 1e-6


def test_attention_weighted_rows_fit_the_calibration_audio_closer(tiny, feats):
    """At 87.5% on the calibration clip itself, weighting rows by received attention lowers the KL to stock."""
    seqs = []
    collect_moments(tiny.model, feats, ("decoder-self",), keep_sequences=seqs)
    with torch.inference_mode():
        reference = _StockReference(tiny.model, seqs, 32)
    kls = {}
    for mix in (0.0, 1.0):
        model = copy.deepcopy(tiny.model)
        convert_model(model, kv_reduction=0.875, calibration_features=feats, attention_mix=mix)
        with torch.inference_mode():
            kls[mix] = reference.kl(model)
    assert kls[1.0] < 0.9 * kls[0.0], kls
