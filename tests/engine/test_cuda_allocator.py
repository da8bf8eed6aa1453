"""The CUDA allocator setting the model loader asks for, and the one-query allocator counters."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from engine import cuda_allocator
from engine.memory.probes import _allocator_counters


@pytest.fixture
def clean_env(monkeypatch):
    for name in cuda_allocator.ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(cuda_allocator.sys, "platform", "linux")
    return monkeypatch


def test_sets_expandable_segments_before_cuda_starts(clean_env):
    clean_env.setattr(torch.cuda, "is_initialized", lambda: False)
    assert cuda_allocator.prefer_expandable_segments() == "set for this process"
    assert cuda_allocator.os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"


@pytest.mark.parametrize("name", cuda_allocator.ENV_NAMES)
def test_a_users_own_setting_is_kept(clean_env, name):
    clean_env.setenv(name, "max_split_size_mb:128")
    assert cuda_allocator.prefer_expandable_segments() == f"left to {name}=max_split_size_mb:128"
    assert cuda_allocator.os.environ[name] == "max_split_size_mb:128"
    others = [n for n in cuda_allocator.ENV_NAMES if n != name]
    assert all(n not in cuda_allocator.os.environ for n in others)


def test_not_on_windows(clean_env):
    clean_env.setattr(cuda_allocator.sys, "platform", "win32")
    assert cuda_allocator.prefer_expandable_segments() == "not offered on this platform"
    assert "PYTORCH_CUDA_ALLOC_CONF" not in cuda_allocator.os.environ


def test_after_cuda_start_switches_through_torch_or_gives_up_quietly(clean_env):
    calls = []
    clean_env.setattr(torch.cuda, "is_initialized", lambda: True)
    clean_env.setattr(torch.cuda.memory, "_set_allocator_settings", calls.append, raising=False)
    assert cuda_allocator.prefer_expandable_segments() == "switched after CUDA start"
    assert calls == ["expandable_segments:True"]

    def refuse(_):
        raise RuntimeError("not supported")

    clean_env.setattr(torch.cuda.memory, "_set_allocator_settings", refuse, raising=False)
    assert cuda_allocator.prefer_expandable_segments() == "CUDA already started (not supported)"
    assert "PYTORCH_CUDA_ALLOC_CONF" not in cuda_allocator.os.environ


def _fake_torch(nested):
    flat = {"allocated_bytes.all.current": 300, "reserved_bytes.all.current": 512, "allocated_bytes.all.peak": 450}
    return SimpleNamespace(cuda=SimpleNamespace(memory=SimpleNamespace(memory_stats_as_nested_dict=nested),
                                                memory_stats=lambda dev: flat))


def test_allocator_counters_read_the_nested_stats_and_fall_back_to_the_flat_ones():
    nested = {"allocated_bytes": {"all": {"current": 300, "peak": 450}}, "reserved_bytes": {"all": {"current": 512}}}
    fast = _allocator_counters(_fake_torch(lambda dev: nested), "cuda:0")
    assert (fast.allocated_bytes, fast.reserved_bytes, fast.peak_bytes) == (300, 512, 450)
    assert _allocator_counters(_fake_torch(lambda dev: {}), "cuda:0") == fast  # another layout: flat numbers
    assert _allocator_counters(_fake_torch(None), "cuda:0") == fast  # no nested query in this torch
