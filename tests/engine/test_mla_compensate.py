"""Drift-compensated calibration: each decoder layer fitted to the inputs it sees behind converted layers.

The algebra on synthetic data (reduced-rank regression beats fitting the drifted inputs
alone, and equals the plain calibrated factorisation when nothing drifted), then the real
thing on tiny.en and real speech.
"""
from __future__ import annotations

import copy

import pytest
import torch

from engine.mla import convert_model
from engine.mla.calibrate import DriftTracker, ForcedSequence, Moments, collect_moments, features_for_files
from engine.mla.decode import decode_prompt, greedy_decode
from engine.mla.factorize import weighted_svd

CLIP = "1089-134691-0000.flac"


def _moments(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    y = x if y is None else y
    return (y.T @ x) / x.shape[0]


def _error(w: torch.Tensor, x: torch.Tensor, x_drift: torch.Tensor, low) -> float:
    approx = torch.cat([low.k_up, low.v_up]) @ (low.down @ x_drift.T)
    return float(((w @ x.T - approx) ** 2).sum() / (w @ x.T).pow(2).sum())


def test_cross_moment_without_drift_is_the_plain_calibrated_factorisation():
    g = torch.Generator().manual_seed(0)
    d = 32
    w_k, w_v = torch.randn(d, d, generator=g, dtype=torch.float64), torch.randn(d, d, generator=g, dtype=torch.float64)
    x = torch.randn(500, d, generator=g, dtype=torch.float64) @ torch.randn(d, d, generator=g, dtype=torch.float64)
    sigma = _moments(x)
    plain = weighted_svd(w_k, w_v, sigma, eps=0.1).truncate(8)
    same = weighted_svd(w_k, w_v, sigma, eps=0.1, cross_moment=sigma).truncate(8)
    assert torch.allclose(torch.cat([plain.k_up, plain.v_up]) @ plain.down, torch.cat([same.k_up, same.v_up]) @ same.down)


def test_cross_moment_undoes_input_drift():
    """Inputs x~ = x + structured drift: fitting W x from x~ beats factorising W on x~ alone."""
    g = torch.Generator().manual_seed(1)
    d, r, n = 32, 16, 4000
    w_k, w_v = torch.randn(d, d, generator=g, dtype=torch.float64), torch.randn(d, d, generator=g, dtype=torch.float64)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.randn(d, d, generator=g, dtype=torch.float64)
    drift = x @ (0.3 * torch.randn(d, d, generator=g, dtype=torch.float64))  # what earlier converted layers add
    x_drift = x + drift
    w = torch.cat([w_k, w_v])
    naive = weighted_svd(w_k, w_v, _moments(x_drift), eps=1e-6).truncate(r)
    fitted = weighted_svd(w_k, w_v, _moments(x_drift), eps=1e-6, cross_moment=_moments(x_drift, x)).truncate(r)
    e_naive, e_fitted = _error(w, x, x_drift, naive), _error(w, x, x_drift, fitted)
    assert e_fitted < 0.5 * e_naive, (e_fitted, e_naive)
    with pytest.raises(ValueError, match="second moment"):
        weighted_svd(w_k, w_v, cross_moment=_moments(x))


@pytest.fixture(scope="module")
def feats(data_dir, tiny):
    return features_for_files([data_dir / CLIP], n_mels=tiny.model.config.num_mel_bins)


def _self_attn_input(model, seq: ForcedSequence, layer: int) -> torch.Tensor:
    """Layer `layer`'s self-attention input from a full, ordinary decoder run."""
    got = []
    handle = model.model.decoder.layers[layer].self_attn.register_forward_pre_hook(
        lambda m, args, kw: got.append(args[0] if args else kw["hidden_states"]), with_kwargs=True)
    try:
        with torch.inference_mode():
            model.model.decoder(input_ids=torch.tensor([seq.tokens]), encoder_hidden_states=seq.encoder_output,
                                use_cache=False)
    finally:
        handle.remove()
    return got[0]


def test_drift_tracker_on_real_speech(tiny, feats):
    """Layer 0: x~ = x. After converting layer 0 at low rank, layer 1's tracked inputs are what
    the real decoder of the partly converted model feeds it, and they moved away from stock's."""
    model = copy.deepcopy(tiny.model)
    sequences: list[ForcedSequence] = []
    moments = collect_moments(model, feats, ("decoder-self",), keep_sequences=sequences)
    assert len(sequences) >= 2 and all(s.encoder_output.shape[0] == 1 for s in sequences)
    rows = sum(s.weight * len(s.tokens) for s in sequences)
    assert moments.counts[("decoder-self", 1, "kv")] == pytest.approx(rows)

    tracker = DriftTracker(model, sequences)
    first = tracker.moments(0)
    plain = moments.second_moment(("decoder-self", 0, "kv"))
    assert torch.allclose(first.second_moment(("decoder-self", 0, "kv")), plain, rtol=1e-4, atol=1e-6)
    assert torch.allclose(first.second_moment(("decoder-self", 0, "cross")), plain, rtol=1e-4, atol=1e-6)

    low_rank = copy.deepcopy(tiny.model)
    convert_model(low_rank, rank=96, calibration_features=feats, compensate=False)
    model.model.decoder.layers[0].self_attn = low_rank.model.decoder.layers[0].self_attn
    tracker.advance(0)
    moved = tracker.moments(1)
    expected = Moments()
    for seq in sequences:  # the same statistics from ordinary decoder runs of both models
        x_drift = _self_attn_input(model, seq, 1)
        expected.add(("decoder-self", 1, "kv"), x_drift, seq.weight)
        expected.add(("decoder-self", 1, "cross"), x_drift, seq.weight, left=_self_attn_input(tiny.model, seq, 1))
    for key in (("decoder-self", 1, "kv"), ("decoder-self", 1, "cross")):
        assert torch.allclose(moved.second_moment(key), expected.second_moment(key), rtol=1e-4, atol=1e-5)
    drifted = moved.second_moment(("decoder-self", 1, "kv"))
    stock_1 = moments.second_moment(("decoder-self", 1, "kv"))
    rel = float((drifted - stock_1).norm() / stock_1.norm())
    assert 1e-3 < rel < 1.0, rel  # moved, but still the same kind of input
    assert not torch.allclose(moved.second_moment(("decoder-self", 1, "cross")), drifted, rtol=1e-4)


def test_compensated_conversion_is_recorded_and_exact_at_full_rank(tiny, feats):
    reference = greedy_decode(tiny.model, feats, keep_logits=True)
    model = copy.deepcopy(tiny.model)
    cfg = convert_model(model, rank=tiny.model.config.d_model, calibration_features=feats)
    assert cfg.init_options.get("compensate") is True and cfg.init_options["key_scale"] == "auto"
    out = greedy_decode(model, feats, keep_logits=True)
    assert out.tokens == reference.tokens
    assert max(float((a - b).abs().max()) for a, b in zip(out.step_logits, reference.step_logits)) < 1e-4


def test_explicit_per_layer_ranks_go_through_the_compensated_fit(tiny, feats):
    """rank_allocation=[...]: each layer gets its own rank, layer by layer; a full-rank layer stays exact."""
    from engine.kv_cache import cache_bytes, new_cache

    d, n = tiny.model.config.d_model, tiny.model.config.decoder_layers
    ranks = [d] + [d // 4] * (n - 1)
    model = copy.deepcopy(tiny.model)
    cfg = convert_model(model, kv_reduction=0.75, calibration_features=feats, rank_allocation=ranks)
    assert cfg.ranks["decoder-self"] == ranks and cfg.init_options["compensate"] is True
    assert cfg.init_options["rank_allocation"] == "explicit"
    assert cfg.kv_reduction == pytest.approx(1 - sum(ranks) / len(ranks) / (2 * d))
    layers = model.model.decoder.layers
    assert [layer.self_attn.kv_down.weight.shape[0] for layer in layers] == ranks
    cache = new_cache()
    ids = torch.tensor([decode_prompt(model) + [679, 714]])
    enc = tiny.model.model.encoder(feats[:1]).last_hidden_state
    with torch.inference_mode():
        model.model.decoder(input_ids=ids, encoder_hidden_states=enc, cache=cache, use_cache=True)
    assert cache_bytes(cache).self_attn == sum(ranks) * ids.shape[1] * 4  # float32 latents, read from the tensors
    # layer 0 at full rank reproduces stock's self-attention on the same input
    x = torch.randn(1, 5, d)
    with torch.inference_mode():
        stock_out = tiny.model.model.decoder.layers[0].self_attn(x)[0]
        mla_out = layers[0].self_attn(x)[0]
    assert torch.allclose(mla_out, stock_out, atol=1e-4)
    alone = convert_model(copy.deepcopy(tiny.model), calibration_features=feats, rank_allocation=ranks)
    assert alone.ranks == cfg.ranks and alone.kv_reduction == cfg.kv_reduction  # no rank or reduction needed
    with pytest.raises(ValueError, match="ranks given"):
        convert_model(copy.deepcopy(tiny.model), kv_reduction=0.75, calibration_features=feats,
                      rank_allocation=ranks[:-1])
