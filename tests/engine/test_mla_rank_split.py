"""Per-layer ranks by measured sensitivity: the exact split search, then the real thing on tiny.en."""
from __future__ import annotations

import argparse
import copy
import itertools
import json

import pytest
import torch

from engine.kv_cache import cache_bytes, new_cache
from engine.mla import convert_model
from engine.mla.calibrate import ForcedSequence, collect_moments, features_for_files
from engine.mla.decode import decode_prompt
from engine.mla.rank_split import choose_split, sensitivity_grid
from engine.mla.storage import load_mla_model

CLIP = "1089-134691-0000.flac"


def test_grid_spans_half_to_twice_the_uniform_rank():
    assert sensitivity_grid(96, 384) == [48, 64, 80, 96, 128, 160, 192]
    assert sensitivity_grid(192, 384) == [96, 128, 160, 192, 256, 320, 384]
    capped = sensitivity_grid(300, 384)
    assert 300 in capped and max(capped) == 384 and min(capped) == 150
    assert sensitivity_grid(5, 384) == [2, 3, 4, 5, 7, 8, 10]  # small ranks: step 1


def test_choose_split_is_the_exact_optimum_under_the_budget():
    g = torch.Generator().manual_seed(0)
    grid = [48, 64, 80, 96, 128, 160, 192]
    for _ in range(20):
        table = (torch.rand(4, len(grid), generator=g).sort(dim=1, descending=True).values ** 3).tolist()
        budget = 96 * 4
        got = choose_split(table, grid, budget)
        assert sum(got) <= budget and all(r in grid for r in got)
        feasible = [c for c in itertools.product(range(len(grid)), repeat=4) if sum(grid[j] for j in c) <= budget]
        best = min(sum(table[i][j] for i, j in enumerate(c)) for c in feasible)
        assert sum(table[i][grid.index(r)] for i, r in enumerate(got)) == pytest.approx(best)
    # a layer that collapses below 128 gets 128 or more, paid for by the layers that do not care
    table = [[5.0, 4.0, 2.7, 0.24, 0.014, 0.003, 0.001], [0.012, 0.01, 0.007, 0.005, 0.002, 0.001, 0.001],
             [0.011, 0.007, 0.005, 0.004, 0.002, 0.001, 0.001], [0.07, 0.04, 0.03, 0.025, 0.013, 0.009, 0.004]]
    assert choose_split(table, grid, 384) == [160, 48, 48, 128]  # tiny.en at 87.5%, measured on LJ + JFK
    with pytest.raises(ValueError, match="fits"):
        choose_split(table, grid, 100)


def _full_kl(stock, model, sequences: list[ForcedSequence]) -> float:
    """KL(stock || model) over the whole vocabulary, weighted like the split's own measure."""
    num = den = 0.0
    with torch.inference_mode():
        for seq in sequences:
            ids = torch.tensor([seq.tokens])
            lp, lq = (torch.log_softmax(m.proj_out(m.model.decoder(input_ids=ids, encoder_hidden_states=seq.encoder_output,
                                                                     use_cache=False).last_hidden_state), -1)[0]
                      for m in (stock, model))
            kl = (lp.exp() * (lp - lq)).sum(-1)
            num += seq.weight * float(kl.sum())
            den += seq.weight * kl.numel()
    return num / den


@pytest.fixture(scope="module")
def feats(data_dir, tiny):
    return features_for_files([data_dir / CLIP], n_mels=tiny.model.config.num_mel_bins)


def test_sensitivity_split_on_real_speech(tiny, feats):
    """At 87.5% on real speech: the measured table is sane, the split keeps the budget, the
    cache really holds each layer's own rank, and the converted model is closer to stock
    than the uniform conversion of the same total."""
    d, n_layers = tiny.model.config.d_model, tiny.model.config.decoder_layers
    model = copy.deepcopy(tiny.model)
    cfg = convert_model(model, kv_reduction=0.875, calibration_features=feats, rank_allocation="sensitivity")
    record = cfg.init_options["rank_sensitivity"]
    ranks = cfg.ranks["decoder-self"]
    assert cfg.init_options["rank_allocation"] == "sensitivity" and cfg.init_options["compensate"] is True
    assert record["ranks"] == ranks and record["grid"] == sensitivity_grid(96, d)
    assert sum(ranks) <= 96 * n_layers and ranks != [96] * n_layers
    assert record["summed_kl"] < record["summed_kl_uniform"]
    for row in record["kl"]:  # more rank, closer to stock
        assert row[-1] < row[0] and min(row) >= 0
    assert cfg.kv_reduction == pytest.approx(1 - sum(ranks) / n_layers / (2 * d))

    cache = new_cache()
    ids = torch.tensor([decode_prompt(model) + [679, 714, 4043]])
    with torch.inference_mode():
        enc = model.model.encoder(feats[:1]).last_hidden_state
        model.model.decoder(input_ids=ids, encoder_hidden_states=enc, cache=cache, use_cache=True)
    layers = cache.self_attention_cache.layers
    assert [layers[i].keys.shape[-1] for i in range(n_layers)] == ranks
    assert cache_bytes(cache).self_attn == sum(ranks) * ids.shape[1] * 4

    uniform = copy.deepcopy(tiny.model)
    convert_model(uniform, kv_reduction=0.875, calibration_features=feats)
    sequences: list[ForcedSequence] = []
    collect_moments(tiny.model, feats, ("decoder-self",), keep_sequences=sequences)
    assert _full_kl(tiny.model, model, sequences) < _full_kl(tiny.model, uniform, sequences)


def test_top_k_measure_matches_the_full_kl(tiny, feats):
    """The split's KL keeps only stock's top 32 tokens per position; on real speech that is the full KL."""
    from engine.mla.attention import MLAAttention
    from engine.mla.rank_split import _StockReference

    sequences: list[ForcedSequence] = []
    moments = collect_moments(tiny.model, feats, ("decoder-self",), keep_sequences=sequences)
    from engine.mla.factorize import weighted_svd

    model = copy.deepcopy(tiny.model)
    attn = model.model.decoder.layers[0].self_attn
    low = weighted_svd(attn.k_proj.weight, attn.v_proj.weight, moments.second_moment(("decoder-self", 0, "kv")),
                       eps=0.1).truncate(16)
    model.model.decoder.layers[0].self_attn = MLAAttention.from_factors(attn, low)
    with torch.inference_mode():
        approx = _StockReference(tiny.model, sequences, top_k=32).kl(model)
    full = _full_kl(tiny.model, model, sequences)
    assert full > 1e-2 and approx == pytest.approx(full, rel=0.05), (approx, full)


def test_cli_layer_ranks_auto_is_the_default_when_deep(tmp_path, data_dir):
    from engine.mla import cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    no_budget = parser.parse_args(["convert", "--layer-ranks", "auto", "--out", str(tmp_path / "a")])
    assert no_budget.func(no_budget) == 2  # auto shares a total: it needs --kv-reduction or --rank
    both = parser.parse_args(["convert", "--layer-ranks", "160,48,48,128", "--kv-reduction", "0.875",
                              "--out", str(tmp_path / "b")])
    assert both.func(both) == 2
    assert cli.parse_ranks("auto") == "sensitivity" and cli.parse_ranks("uniform") == "uniform"
    out = tmp_path / "auto"  # from 85% on, the measured split is the default
    args = parser.parse_args(["convert", "--kv-reduction", "0.875", "--calibrate", str(data_dir / CLIP),
                              "--out", str(out)])
    assert args.func(args) == 0
    meta = json.loads((out / "mla_config.json").read_text())
    ranks = meta["ranks"]["decoder-self"]
    assert meta["init_options"]["rank_allocation"] == "sensitivity" and sum(ranks) <= 4 * 96
    assert meta["init_options"]["rank_sensitivity"]["ranks"] == ranks
    model, _ = load_mla_model(out)
    assert [layer.self_attn.rank for layer in model.model.decoder.layers] == ranks
