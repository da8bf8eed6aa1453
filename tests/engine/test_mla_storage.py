"""Whisper-MLA folders: save / load round trip (safetensors only), resolve_model, the convert CLI."""
from __future__ import annotations

import argparse
import copy
import json

import pytest
import torch

from engine.mla import MLAConfig, convert_model, is_mla_dir, load_mla_model, save_mla_model
from engine.mla.calibrate import features_for_files
from engine.mla.decode import decode_prompt


@pytest.fixture(scope="module")
def enc(data_dir, tiny):
    feats = features_for_files([data_dir / "1089-134691-0000.flac"], n_mels=tiny.model.config.num_mel_bins)
    with torch.inference_mode():
        return tiny.model.model.encoder(feats).last_hidden_state


def teacher_forced_logits(model, enc) -> torch.Tensor:
    """Decoder logits on a fixed transcript (the encoders are not converted here, so one output serves all)."""
    ids = torch.tensor([decode_prompt(model) + [679, 714, 4043, 645, 2392, 13]])  # " He could wait no longer."
    with torch.inference_mode():
        return model.proj_out(model.model.decoder(input_ids=ids, encoder_hidden_states=enc).last_hidden_state)


@pytest.fixture(scope="module")
def saved(tiny, tmp_path_factory):
    model = copy.deepcopy(tiny.model)
    cfg = convert_model(model, kv_reduction=0.875, init="svd", exact_cross=True, source="tiny.en")
    out = save_mla_model(model, cfg, tmp_path_factory.mktemp("mla") / "tiny-mla", tokenizer=tiny.tokenizer,
                         extra_files_from=tiny.folder)
    return model, cfg, out


def test_folder_is_self_contained_and_described(saved, tiny):
    _, cfg, out = saved
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "mla_config.json", "generation_config.json",
            "tokenizer.json", "preprocessor_config.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pth", ".pkl")) for n in names)
    meta = json.loads((out / "mla_config.json").read_text())
    n_layers = tiny.model.config.decoder_layers
    assert meta["modules"] == ["decoder-self"] and meta["ranks"]["decoder-self"] == [96] * n_layers
    assert meta["init"] == "svd" and meta["kv_reduction"] == 0.875 and meta["exact_cross"] is True
    assert meta["source"] == "tiny.en" and meta["created"]
    assert is_mla_dir(out) and not is_mla_dir(tiny.folder)
    assert MLAConfig.from_dict(meta) == cfg


def test_round_trip_gives_identical_logits_without_pickle(saved, enc, monkeypatch):
    model, cfg, out = saved

    def no_pickle(*a, **k):
        raise AssertionError("torch.load (pickle) must not be used")

    monkeypatch.setattr(torch, "load", no_pickle)
    loaded, loaded_cfg = load_mla_model(out, "cpu", torch.float32)
    assert loaded_cfg == cfg and not loaded.training
    assert loaded.proj_out.weight is loaded.model.decoder.embed_tokens.weight  # still tied
    assert torch.equal(teacher_forced_logits(loaded, enc), teacher_forced_logits(model, enc))


def test_resolve_model_loads_an_mla_folder(saved, enc):
    from engine.model_sources import resolve_model

    model, _, out = saved
    got = resolve_model(str(out), device="cpu", dtype=torch.float32)
    assert got.info.kv_mode.startswith("mla decoder-self r=96") and "exact cross" in got.info.kv_mode
    assert torch.equal(teacher_forced_logits(got.model, enc), teacher_forced_logits(model, enc))


def test_half_precision_folder(saved, tmp_path, enc):
    model, cfg, _ = saved
    out = save_mla_model(model, cfg, tmp_path / "half", dtype=torch.float16)
    loaded, _ = load_mla_model(out, "cpu", torch.float32)
    assert (out / "model.safetensors").stat().st_size < 0.6 * sum(
        t.numel() * 4 for n, t in model.state_dict().items() if n != "proj_out.weight")
    assert torch.allclose(teacher_forced_logits(loaded, enc), teacher_forced_logits(model, enc), atol=0.1)


def test_load_refuses_other_folders(tiny, tmp_path):
    with pytest.raises(FileNotFoundError):
        load_mla_model(tiny.folder)
    with pytest.raises(FileNotFoundError):
        load_mla_model(tmp_path)


def test_cli_convert_with_default_calibration(tmp_path):
    from engine.mla import cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    out = tmp_path / "cal75"
    args = parser.parse_args(["convert", "--kv-reduction", "0.75", "--out", str(out)])
    assert args.modules == ("decoder-self",) and args.init == "calibrated"
    assert args.func(args) == 0
    meta = json.loads((out / "mla_config.json").read_text())
    assert meta["init"] == "calibrated" and meta["calibration_audio"] == ["jfk_inaugural_excerpt.flac"]
    assert meta["ranks"]["decoder-self"][0] == 192 and meta["kv_reduction"] == 0.75
    model, _ = load_mla_model(out)
    assert model.model.decoder.layers[0].self_attn.rank == 192


def test_cli_convert_paper_layout_without_compensation(tmp_path):
    """--keep-key-dims: the paper's exact key dimensions beside the latent; --no-compensate recorded as absent."""
    from engine.mla import cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    out = tmp_path / "paper75"
    args = parser.parse_args(["convert", "--kv-reduction", "0.75", "--keep-key-dims", "4", "--key-selection",
                              "uniform", "--no-compensate", "--out", str(out)])
    assert args.compensate is False
    assert args.func(args) == 0
    meta = json.loads((out / "mla_config.json").read_text())
    assert meta["init_options"]["keep_key_dims"] == 4 and meta["init_options"]["key_selection"] == "uniform"
    assert "compensate" not in meta["init_options"]
    model, _ = load_mla_model(out)
    attn = model.model.decoder.layers[0].self_attn
    assert attn.rank == 192
    assert int((attn.v_up.weight[:, -24:] == 0).all()) == 1  # 6 heads x 4 kept key dims: no value part


def test_cli_convert_with_layer_ranks(tmp_path):
    """--layer-ranks: each decoder layer its own latent, recorded and loaded as such."""
    from engine.mla import cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    out = tmp_path / "ranks875"
    args = parser.parse_args(["convert", "--layer-ranks", "160,48,48,128", "--init", "svd", "--out", str(out)])
    assert args.func(args) == 0
    meta = json.loads((out / "mla_config.json").read_text())
    assert meta["ranks"]["decoder-self"] == [160, 48, 48, 128] and meta["kv_reduction"] == 0.875
    model, _ = load_mla_model(out)
    assert [layer.self_attn.rank for layer in model.model.decoder.layers] == [160, 48, 48, 128]
    with pytest.raises(SystemExit):
        parser.parse_args(["convert", "--layer-ranks", "160,x", "--out", "x"])
    both = parser.parse_args(["convert", "--layer-ranks", "160,48", "--rank", "8", "--out", str(tmp_path / "b")])
    assert both.func(both) == 2  # explicit ranks and a size: refused with a message
    wrong = parser.parse_args(["convert", "--layer-ranks", "160,48", "--init", "svd", "--out", str(tmp_path / "w")])
    assert wrong.func(wrong) == 2  # two ranks for four layers: refused with a message


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    from engine.mla import cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["convert", "--out", str(tmp_path / "x")])
    assert args.func(args) == 2  # no size given
    with pytest.raises(SystemExit):
        parser.parse_args(["convert", "--modules", "decoder-self,bogus", "--rank", "8", "--out", "x"])
    with pytest.raises(SystemExit):
        parser.parse_args(["convert", "--rank", "8", "--kv-reduction", "0.75", "--out", "x"])


def test_allocate_ranks_follows_the_spectra():
    from engine.mla.factorize import allocate_ranks

    flat = torch.full((8,), 0.9)
    steep = torch.tensor([8.0, 4.0, 2.0, 1.0, 0.5, 0.25, 0.1, 0.05])
    ranks = allocate_ranks([flat, steep], total=8, min_rank=2)
    assert sum(ranks) == 8 and min(ranks) >= 2
    assert ranks == [4, 4]  # steep's 2.0 and 1.0 beat flat's 0.9s, which beat steep's 0.5
    assert allocate_ranks([flat, flat * 10], total=10, min_rank=2) == [2, 8]
    with pytest.raises(ValueError):
        allocate_ranks([flat, steep], total=17)


def test_per_layer_ranks_keep_the_budget_and_round_trip(tiny, enc, tmp_path):
    """rank_allocation="spectrum": same total latent, uneven per layer, saved and loaded as such."""
    from engine.kv_cache import cache_bytes, new_cache

    model = copy.deepcopy(tiny.model)
    cfg = convert_model(model, kv_reduction=0.75, init="svd", rank_allocation="spectrum", source="tiny.en")
    d, n_layers = tiny.model.config.d_model, tiny.model.config.decoder_layers
    ranks = cfg.ranks["decoder-self"]
    assert sum(ranks) == n_layers * d // 2 and len(set(ranks)) > 1 and min(ranks) >= d // 8
    cache = new_cache()
    ids = torch.tensor([decode_prompt(model) + [679, 714, 4043]])
    with torch.inference_mode():
        model.model.decoder(input_ids=ids, encoder_hidden_states=enc, cache=cache, use_cache=True)
    # the cache really holds sum(ranks) numbers per token (float32), whatever each layer's share
    assert cache_bytes(cache).self_attn == sum(ranks) * ids.shape[1] * 4
    out = save_mla_model(model, cfg, tmp_path / "spectrum", tokenizer=tiny.tokenizer, extra_files_from=tiny.folder)
    loaded, loaded_cfg = load_mla_model(out, "cpu", torch.float32)
    assert loaded_cfg.ranks == cfg.ranks
    assert torch.equal(teacher_forced_logits(loaded, enc), teacher_forced_logits(model, enc))
