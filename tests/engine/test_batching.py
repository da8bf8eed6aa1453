"""--batch-size auto (measured per-window cache) and the CUDA out-of-memory fallback."""
from __future__ import annotations

import copy
import logging
from dataclasses import replace

import pytest
import torch

from engine.batching import (FallbackState, WindowCache, batch_for_budget, choose_batch_size, is_oom_error,
                             measure_window_cache, model_bytes, parse_batch_size, parse_size, plan_batch,
                             run_with_oom_fallback)


@pytest.mark.parametrize("text, expected", [
    ("6GB", 6 << 30), ("6G", 6 << 30), ("6 GiB", 6 << 30), ("512MB", 512 << 20), ("512mib", 512 << 20),
    ("1.5g", 3 << 29), ("64k", 64 << 10), ("1000", 1000), ("2TB", 2 << 40), (4096, 4096),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "GB", "6 apples", "-1G", "6XB"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_parse_batch_size():
    assert parse_batch_size("auto") == "auto" and parse_batch_size("AUTO") == "auto" and parse_batch_size("8") == 8
    for bad in ("0", "-2", "many"):
        with pytest.raises(ValueError):
            parse_batch_size(bad)


def _cost(self_per_token: int, cross: int) -> WindowCache:
    return WindowCache(self_bytes_per_token=self_per_token, cross_bytes=cross, encoder_out_bytes=2_304_000,
                       encoder_activation_bytes=40_000_000, activation_measured=False, logits_bytes_per_row=207_456)


def test_smaller_window_cache_gives_larger_batch():
    stock, mla = _cost(12_288, 18_432_000), _cost(3_072, 0)
    assert mla.window_bytes(5) < stock.window_bytes(5)
    budget = 2 << 30
    b_stock = batch_for_budget(stock.window_bytes(5), budget, cap=64)
    b_mla = batch_for_budget(mla.window_bytes(5), budget, cap=64)
    assert 1 <= b_stock < b_mla
    assert batch_for_budget(stock.window_bytes(5), 1000, cap=64) == 1  # never 0
    assert batch_for_budget(1, budget, cap=16) == 16  # capped


def test_measured_cache_of_real_tiny(tiny):
    cost = measure_window_cache(tiny)
    c = tiny.model.config
    layers, d = c.decoder_layers, c.d_model
    assert cost.cross_bytes == layers * 1500 * 2 * d * 4  # fp32 K and V of 1500 frames per layer
    assert cost.self_bytes_per_token == layers * 2 * d * 4
    assert cost.self_bytes_max == cost.self_bytes_per_token * 448
    assert measure_window_cache(tiny) is cost  # remembered


def test_auto_batch_gives_mla_a_larger_batch(tiny):
    pytest.importorskip("engine.mla.convert", reason="the MLA package is not importable yet")
    from engine.mla import convert_model

    model = copy.deepcopy(tiny.model)
    convert_model(model, kv_reduction=0.75, init="svd")  # svd: fast; the batch only depends on cache shapes
    mla = replace(tiny, model=model)
    stock_cost, mla_cost = measure_window_cache(tiny), measure_window_cache(mla)
    assert mla_cost.self_bytes_per_token * 4 == stock_cost.self_bytes_per_token  # r = d/2 instead of 2d
    per_window = stock_cost.window_bytes(5)
    encoder_call = stock_cost.encoder_bytes(16, tiny.n_mels)  # once per batch, before the decode
    budget = model_bytes(tiny.model) + (256 << 20) + encoder_call + 8 * per_window + per_window // 2
    stock_batch = choose_batch_size(tiny, budget, beam_size=5, margin=0.0)
    mla_batch = choose_batch_size(mla, budget, beam_size=5, margin=0.0)
    assert stock_batch == 8
    assert mla_batch > stock_batch
    plan = plan_batch(mla, budget, beam_size=5, margin=0.0)
    assert plan.budget_source == "given" and plan.per_window_bytes < per_window
    assert choose_batch_size(tiny, beam_size=1, n_windows=3) <= 3  # never more than the file has
    assert 1 <= choose_batch_size(tiny) <= 16  # CPU default: available RAM, capped


def _fake_decoder(limit: int, log: list[list[int]]):
    def decode_windows(indices: list[int]) -> list[str]:
        log.append(list(indices))
        if len(indices) > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [f"window {i}" for i in indices]

    return decode_windows


def test_oom_fallback_halves_and_keeps_every_window_once_in_order(caplog):
    calls: list[list[int]] = []
    state = FallbackState(8)
    caplog.set_level(logging.WARNING, logger="engine.memory.oom")
    out = list(run_with_oom_fallback(_fake_decoder(2, calls), range(11), 8, state=state))
    results = [r for _, group in out for r in group]
    assert results == [f"window {i}" for i in range(11)]
    assert [i for g, _ in out for i in g] == list(range(11))
    assert all(len(g) <= 2 for g, _ in out)
    assert calls[:3] == [list(range(8)), list(range(4)), [0, 1]]  # same windows retried, smaller
    assert state.batch_size == 2 and state.oom_events == 2 and not state.on_cpu
    assert "retrying with batch size 4" in caplog.text


def test_oom_at_batch_one_falls_back_to_cpu(caplog):
    device = {"cuda": True}

    def decode_windows(indices):
        if device["cuda"]:
            raise RuntimeError("CUDA error: out of memory")
        return [i * 10 for i in indices]

    def to_cpu():
        device["cuda"] = False

    caplog.set_level(logging.WARNING, logger="engine.memory.oom")
    state = FallbackState(4)
    out = list(run_with_oom_fallback(decode_windows, [0, 1, 2, 3, 4], 4, to_cpu=to_cpu, state=state))
    assert [r for _, g in out for r in g] == [0, 10, 20, 30, 40]
    assert state.on_cpu and state.batch_size == 1 and state.oom_events == 3
    assert "continuing on the CPU" in caplog.text


def test_oom_without_cpu_fallback_and_other_errors_propagate():
    with pytest.raises(torch.cuda.OutOfMemoryError):
        list(run_with_oom_fallback(_fake_decoder(0, []), range(3), 2))

    def broken(indices):
        raise ValueError("not an OOM")

    with pytest.raises(ValueError, match="not an OOM"):
        list(run_with_oom_fallback(broken, range(3), 2))
    with pytest.raises(ValueError, match="results for"):
        list(run_with_oom_fallback(lambda idx: [1], range(3), 2))
    assert is_oom_error(torch.cuda.OutOfMemoryError("x")) and is_oom_error(RuntimeError("CUDA out of memory"))
    assert not is_oom_error(RuntimeError("shape mismatch"))


def test_batch_is_encoded_a_chunk_at_a_time(tiny, monkeypatch):
    """Features and encoder run ENCODER_CHUNK windows at a time; the output equals one big call."""
    import engine.decoding as decoding
    from engine.decoding import WindowDecoder

    monkeypatch.setattr(decoding, "ENCODER_CHUNK", 2)
    mel = torch.randn(5, tiny.n_mels, 3000, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    asked: list[tuple[int, int]] = []

    def features(i: int, j: int) -> torch.Tensor:
        asked.append((i, j))
        return mel[i:j]

    dec = WindowDecoder(tiny)
    chunked = dec.encode_chunks(5, features)
    with torch.inference_mode():
        whole = tiny.model.model.encoder(mel).last_hidden_state
    assert asked == [(0, 2), (2, 4), (4, 5)]
    assert chunked.shape == whole.shape
    torch.testing.assert_close(chunked, whole, atol=1e-4, rtol=1e-4)
