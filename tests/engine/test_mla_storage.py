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
