"""The timestamp rules run vectorised over rows; they must equal openai-whisper's per-row rules."""
from __future__ import annotations

import random

import pytest
import torch

from engine.decoding import NEG_INF, timestamp_pairing_rules

TB, EOT, VOCAB = 50364, 50256, 51865  # tiny.en's first timestamp, end of text, vocabulary


def per_row_rules(logits: torch.Tensor, sampled: torch.Tensor, tb: int, eot: int) -> None:
    """openai-whisper's ApplyTimestampRules (the pairing part), one row at a time."""
    for k, seq in enumerate(sampled.tolist()):
        last_ts = len(seq) >= 1 and seq[-1] >= tb
        penult_ts = len(seq) < 2 or seq[-2] >= tb
        if last_ts:
            if penult_ts:
                logits[k, tb:] = NEG_INF
            else:
                logits[k, :eot] = NEG_INF
        stamps = [t for t in seq if t >= tb]
        if stamps:
            floor = stamps[-1] if (last_ts and not penult_ts) else stamps[-1] + 1
            logits[k, tb:floor] = NEG_INF


@pytest.mark.parametrize("n_sampled", [0, 1, 2, 3, 8, 40])
def test_vectorised_rules_equal_the_per_row_rules(n_sampled):
    rng = random.Random(n_sampled)
    rows = []
    for _ in range(64):  # text and timestamps in random order: pairs, lone stamps, repeats, backwards ones
        p_ts = rng.random()
        rows.append([rng.randrange(TB, VOCAB) if rng.random() < p_ts else rng.randrange(0, EOT)
                     for _ in range(n_sampled)])
    sampled = torch.tensor(rows, dtype=torch.long).reshape(64, n_sampled)
    logits = torch.randn(64, VOCAB, generator=torch.Generator().manual_seed(n_sampled))
    expected, got = logits.clone(), logits.clone()
    per_row_rules(expected, sampled, TB, EOT)
    timestamp_pairing_rules(got, sampled, TB, EOT)
    assert torch.equal(got, expected)
    if n_sampled >= 2:
        assert bool(torch.isinf(got).any())  # the case mix really exercised the rules


def test_rules_on_typical_sequences():
    t = lambda s: TB + int(s / 0.02)  # noqa: E731 - timestamp token of s seconds
    sampled = torch.tensor([
        [t(0.0), 100, 200, t(2.0)],          # text + timestamp: only a timestamp >= 2.0 s or the end
        [t(0.0), 100, t(2.0), t(2.0)],       # closed pair: text must follow, timestamps > 2.0 s banned
        [t(0.0), 100, 200, 300],             # inside a segment: no timestamp before 0.02 s
    ])
    logits = torch.zeros(3, VOCAB)
    timestamp_pairing_rules(logits, sampled, TB, EOT)
    assert torch.isinf(logits[0, :EOT]).all() and torch.isinf(logits[0, TB:t(2.0)]).all()
    assert logits[0, EOT] == 0 and logits[0, t(2.0)] == 0
    assert torch.isinf(logits[1, TB:]).all() and logits[1, 100] == 0
    assert torch.isinf(logits[2, t(0.0)]) and logits[2, t(0.02)] == 0 and logits[2, 100] == 0
