"""Per-head balance of key and value errors in the calibrated factorisation (key_scale="auto").

A score error moves a head's output in proportion to how different the values it mixes
are; `value_spread` measures that spread from the input statistics alone, and
`output_row_weight` scales each head's key block by it.
"""
from __future__ import annotations

import pytest
import torch

from engine.mla import convert_model
from engine.mla.factorize import output_row_weight, value_spread


def _layer(d: int = 16, heads: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w = lambda: torch.randn(d, d, generator=g, dtype=torch.float64)  # noqa: E731
    x = torch.randn(20000, d, generator=g, dtype=torch.float64) @ w() + torch.randn(d, generator=g, dtype=torch.float64)
    return w(), w(), w(), x, heads


def test_value_spread_is_the_rms_spread_of_output_projected_values():
    w_v, w_o, _, x, heads = _layer()
    spread = value_spread(w_v, w_o, heads, x.T @ x / len(x), x.mean(0))
    dh = w_v.shape[0] // heads
    for h in range(heads):
        sl = slice(h * dh, (h + 1) * dh)
        u = x @ (w_o[:, sl] @ w_v[sl]).T  # every input's value, through the output projection
        rms = (u - u.mean(0)).pow(2).sum(1).mean().sqrt()
        assert float(spread[h]) == pytest.approx(float(rms), rel=1e-6)


def test_per_head_scale_multiplies_each_key_block_only():
    w_v, w_o, w_q, x, heads = _layer(seed=1)
    d, dh = w_q.shape[0], w_q.shape[0] // heads
    moment, mean = x.T @ x / len(x), x.mean(0)
    one = output_row_weight(w_q, None, w_o, heads, moment, mean, key_scale=1.0)
    scales = torch.tensor([0.5, 1.0, 2.0, 3.0], dtype=torch.float64)
    per_head = output_row_weight(w_q, None, w_o, heads, moment, mean, key_scale=scales)
    for h in range(heads):
        sl = slice(h * dh, (h + 1) * dh)
        assert torch.allclose(per_head[sl, sl], scales[h] * one[sl, sl])
    assert torch.equal(per_head[d:, d:], one[d:, d:])  # value rows untouched


def test_convert_rejects_an_unknown_key_scale_word(tiny):
    """(The default "auto" is exercised, exact at full rank, in test_mla_compensate.)"""
    with pytest.raises(ValueError, match="key_scale"):
        convert_model(tiny.model, kv_reduction=0.75, key_scale="balanced")
    assert getattr(tiny.model, "mla_config", None) is None  # refused before touching the model
