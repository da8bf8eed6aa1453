"""The paper's layout: n key dimensions per head cached exactly beside a joint latent of the rest."""
from __future__ import annotations

import copy

import pytest
import torch

from engine.kv_cache import cache_bytes, new_cache
from engine.mla import MLAAttention, convert_model
from engine.mla.decode import decode_prompt, greedy_decode
from engine.mla.kept_keys import dim_energies, kept_key_factors, select_kept_key_dims
from engine.mla.calibrate import features_for_files
from engine.mla.storage import load_mla_model, save_mla_model


def test_selection_uniform_and_by_norm():
    assert select_kept_key_dims(2, 8, 2, "uniform") == [0, 4, 8, 12]
    q = torch.ones(16)
    k = torch.arange(16, dtype=torch.float64)
    k[1] = 100.0  # head 0: dim 1 and the last one dominate; head 1: its two last ones
    assert select_kept_key_dims(2, 8, 2, "norm", q, k) == [1, 7, 14, 15]
    with pytest.raises(ValueError):
        select_kept_key_dims(2, 8, 8, "uniform")
    with pytest.raises(ValueError):
        select_kept_key_dims(2, 8, 2, "bogus")
    with pytest.raises(ValueError):
        select_kept_key_dims(2, 8, 2, "norm")


def test_energies_from_moments_match_the_data():
    g = torch.Generator().manual_seed(0)
    d = 16
    w_q, b_q, w_k = (torch.randn(d, d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64),
                     torch.randn(d, d, generator=g, dtype=torch.float64))
    x = torch.randn(2000, d, generator=g, dtype=torch.float64) + 0.5
    m = x.T @ x / len(x)
    q_e, k_e = dim_energies(w_q, b_q, w_k, m, x.mean(0), m)
    assert torch.allclose(q_e, ((x @ w_q.T + b_q) ** 2).mean(0))
    assert torch.allclose(k_e, ((x @ w_k.T) ** 2).mean(0))
    q_w, k_w = dim_energies(w_q, b_q, w_k)
    assert torch.allclose(k_w, (w_k**2).sum(1))


def test_kept_rows_are_exact_and_values_ignore_them():
    g = torch.Generator().manual_seed(2)
    d = 24
    w_k, w_v = torch.randn(d, d, generator=g), torch.randn(d, d, generator=g)
    kept = [0, 5, 12, 19]
    low = kept_key_factors(w_k, w_v, kept, rank=10, eps=1e-4)
    assert low.rank == 10 and low.k_up.shape == (d, 10) and low.v_up.shape == (d, 10)
    keys = low.k_up @ low.down
    assert torch.allclose(keys[kept], w_k[kept], atol=1e-6)
    assert torch.count_nonzero(low.v_up[:, 6:]) == 0  # the last 4 latent numbers are the kept keys
    with pytest.raises(ValueError, match="no joint latent"):
        kept_key_factors(w_k, w_v, kept, rank=4)


@pytest.fixture(scope="module")
def feats(data_dir, tiny):
    return features_for_files([data_dir / "1089-134691-0000.flac"], n_mels=tiny.model.config.num_mel_bins)


@pytest.mark.parametrize("init", ["svd", "calibrated"])
def test_paper_layout_conversion_caches_r_and_round_trips(tiny, feats, tmp_path, init):
    model = copy.deepcopy(tiny.model)
    d, heads = tiny.model.config.d_model, tiny.model.config.decoder_attention_heads
    cfg = convert_model(model, kv_reduction=0.75, init=init, keep_key_dims=4, calibration_features=feats,
                        source="tiny.en")
    assert cfg.ranks["decoder-self"] == [d // 2] * tiny.model.config.decoder_layers
    assert cfg.init_options["keep_key_dims"] == 4 and cfg.init_options["key_selection"] == "norm"
    for stock_layer, layer in zip(tiny.model.model.decoder.layers, model.model.decoder.layers):
        attn = layer.self_attn
        assert isinstance(attn, MLAAttention)
        keys = attn.k_up.weight @ attn.kv_down.weight
        exact = torch.isclose(keys, stock_layer.self_attn.k_proj.weight, atol=1e-6).all(1)
        assert int(exact.sum()) >= heads * 4  # 4 key rows per head reproduced exactly

    ids = torch.tensor([decode_prompt(model) + [679, 714, 4043]])
    with torch.inference_mode():
        enc = model.model.encoder(feats).last_hidden_state
        cache = new_cache()
        model.model.decoder(input_ids=ids, encoder_hidden_states=enc, cache=cache, use_cache=True)
    assert cache_bytes(cache).self_attn == tiny.model.config.decoder_layers * (d // 2) * ids.shape[1] * 4

    out = greedy_decode(model, feats)
    text = tiny.tokenizer.decode(out.tokens[0], skip_special_tokens=True).lower()
    assert "wait" in text and "longer" in text  # "HE COULD WAIT NO LONGER": still right at 75%
    folder = save_mla_model(model, cfg, tmp_path / init, tokenizer=tiny.tokenizer, extra_files_from=tiny.folder,
                            dtype=torch.float32)
    loaded, loaded_cfg = load_mla_model(folder, "cpu", torch.float32)
    assert loaded_cfg.init_options["keep_key_dims"] == 4
    assert greedy_decode(loaded, feats).tokens == out.tokens


def test_kept_keys_reject_spectrum_allocation(tiny):
    with pytest.raises(ValueError, match="uniform"):
        convert_model(copy.deepcopy(tiny.model), kv_reduction=0.75, init="svd", keep_key_dims=4,
                      rank_allocation="spectrum")
