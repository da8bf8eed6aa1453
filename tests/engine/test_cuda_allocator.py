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


def test_sets_expandable_segments_in_a_fresh_process():
    """Real torch, no patching: the setting is in force afterwards (torch parses it lazily)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k not in cuda_allocator.ENV_NAMES}
    code = ("import torch; from engine.cuda_allocator import prefer_expandable_segments as p; r = p(); "
            "g = getattr(torch._C, '_accelerator_getAllocatorSettings', None); "
            "print(r, '|', g() if g else 'expandable_segments:True')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    result, settings = (x.strip() for x in out.stdout.strip().rsplit("|", 1))
    if sys.platform.startswith("linux"):
        assert result == "set for this process" and "expandable_segments:True" in settings.replace(" ", "")
    else:
        assert result == "not offered on this platform"


def test_reads_back_and_switches_when_the_allocator_had_its_settings(clean_env):
    state = {"settings": "", "calls": []}
    clean_env.setattr(torch._C, "_accelerator_getAllocatorSettings", lambda: state["settings"], raising=False)
    clean_env.setattr(torch._C, "_accelerator_setAllocatorSettings", state["calls"].append, raising=False)
    assert cuda_allocator.prefer_expandable_segments() == "switched at runtime"
    assert state["calls"] == ["expandable_segments:True"]
    state["settings"] = "expandable_segments: True"  # parsed from the environment the call set
    assert cuda_allocator.prefer_expandable_segments() == "set for this process"
    assert state["calls"] == ["expandable_segments:True"]  # nothing switched the second time

    def refuse(_):
        raise RuntimeError("not supported")

    state["settings"] = ""
    clean_env.setattr(torch._C, "_accelerator_setAllocatorSettings", refuse, raising=False)
    assert cuda_allocator.prefer_expandable_segments() == "allocator already configured (not supported)"


def test_without_the_settings_query_it_trusts_the_environment_until_cuda_starts(clean_env):
    clean_env.delattr(torch._C, "_accelerator_getAllocatorSettings", raising=False)
    clean_env.setattr(torch.cuda, "is_initialized", lambda: False)
    assert cuda_allocator.prefer_expandable_segments() == "set for this process"
    assert cuda_allocator.os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    calls = []
    clean_env.setattr(torch.cuda, "is_initialized", lambda: True)
    clean_env.delattr(torch._C, "_accelerator_setAllocatorSettings", raising=False)
    clean_env.setattr(torch.cuda.memory, "_set_allocator_settings", calls.append, raising=False)
    assert cuda_allocator.prefer_expandable_segments() == "switched at runtime"  # the older name
    assert calls == ["expandable_segments:True"]


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
