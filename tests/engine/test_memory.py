"""Memory probes and the sampler: sane values on CPU, >= 10 Hz, clean stop, live KV bytes during a real run."""
from __future__ import annotations

import threading
import time

import pytest
import torch

from engine.memory.probes import (MemorySample, gpu_status, nvml_memory, rss_bytes, take_sample,
                                  torch_cuda_memory)
from engine.memory.sampler import MemorySampler
from engine.results import KVCacheBytes

GPU = torch.cuda.is_available()


def test_rss_is_positive():
    rss = rss_bytes()
    assert isinstance(rss, int) and rss > 10 << 20  # a Python process with torch loaded


def test_gpu_probes_on_cpu_return_none_with_reason():
    for probe in (torch_cuda_memory, nvml_memory):
        value, reason = probe("cpu")
        assert value is None and reason == "model runs on CPU"
    if GPU:
        pytest.skip("a CUDA GPU is present: the no-GPU reasons cannot be checked here")
    for probe in (torch_cuda_memory, nvml_memory):
        value, reason = probe("cuda")
        assert value is None and isinstance(reason, str) and reason
    status = gpu_status()
    assert not status.available and status.name is None and status.reason
    assert status.label() == f"GPU memory: {status.reason}; showing process memory and KV-cache bytes"


def test_take_sample_fields():
    s = take_sample(1.25, KVCacheBytes(self_attn=10, cross_attn=32), device="cpu")
    assert isinstance(s, MemorySample)
    assert s.t == 1.25 and s.rss_bytes > 0 and (s.kv_self_bytes, s.kv_cross_bytes, s.kv_total_bytes) == (10, 32, 42)
    assert s.torch_allocated_bytes is None and s.device_used_bytes is None and s.process_device_bytes is None
    d = s.to_dict()
    assert set(d) == {"t", "rss_bytes", "kv_self_bytes", "kv_cross_bytes", "torch_allocated_bytes",
                      "torch_reserved_bytes", "torch_peak_bytes", "device_used_bytes", "device_total_bytes",
                      "process_device_bytes"}


def test_sampler_rate_subscribers_and_clean_stop():
    got: list[MemorySample] = []
    sampler = MemorySampler(device="cpu")
    unsubscribe = sampler.subscribe(got.append)
    with sampler:
        assert sampler.running
        time.sleep(0.6)
    assert not sampler.running
    assert not any(t.name == "memory-sampler" and t.is_alive() for t in threading.enumerate())
    assert sampler.rate_hz() >= 10.0
    n = sampler.sample_count
    assert n >= 7 and len(got) == n and len(sampler.samples) == n
    ts = [s.t for s in sampler.samples]
    assert ts == sorted(ts) and ts[0] < 0.05
    time.sleep(0.15)
    assert sampler.sample_count == n  # nothing after stop
    peak = sampler.peak()
    assert peak.samples == n and peak.rss_bytes == max(s.rss_bytes for s in got)
    assert sampler.cpu_time_s < 0.3  # its own cost over ~0.6 s
    unsubscribe()
    sampler.stop()  # second stop is harmless


def test_sampler_decimates_but_keeps_peaks():
    calls = {"n": 0}

    def kv() -> KVCacheBytes:
        calls["n"] += 1
        return KVCacheBytes(self_attn=1_000_000 if calls["n"] == 37 else calls["n"], cross_attn=5)

    sampler = MemorySampler(interval_s=0.001, kv_source=kv, device="cpu", max_samples=16)
    with sampler:
        while sampler.sample_count < 120:
            time.sleep(0.01)
    timeline = sampler.samples
    assert len(timeline) <= 17 < sampler.sample_count
    assert max(s.kv_self_bytes for s in timeline) == 1_000_000 == sampler.peak().kv_self_bytes
    assert [s.t for s in timeline] == sorted(s.t for s in timeline)


def test_sampler_survives_failing_sources_and_subscribers():
    state = {"n": 0}

    def flaky() -> KVCacheBytes:
        state["n"] += 1
        if state["n"] % 2:
            raise RuntimeError("dictionary changed size during iteration")
        return KVCacheBytes(7, 0)

    def bad_subscriber(_s) -> None:
        raise ValueError("subscriber bug")

    sampler = MemorySampler(interval_s=0.01, kv_source=flaky, device="cpu")
    sampler.subscribe(bad_subscriber)
    with sampler:
        time.sleep(0.15)
    assert sampler.sample_count >= 5
    assert all(s.kv_self_bytes == 7 for s in sampler.samples)


def test_sampler_sees_live_kv_bytes_of_a_real_transcription(tiny, sample_path):
    from engine.transcribe import Transcriber

    transcriber = Transcriber(tiny)
    seen: list[MemorySample] = []
    sampler = MemorySampler(interval_s=0.02, kv_source=transcriber.decoder.live_kv_bytes, device="cpu")
    sampler.subscribe(seen.append)
    with sampler:
        transcript = transcriber.transcribe(sample_path)
    assert "fellow Americans" in transcript.text
    peak = transcriber.decoder.kv_peak
    live_self = max(s.kv_self_bytes for s in seen)
    live_cross = max(s.kv_cross_bytes for s in seen)
    assert 0 < live_self <= peak.self_attn
    assert 0 < live_cross <= peak.cross_attn
    assert sampler.peak().kv_total_bytes <= peak.total
    assert seen[-1].kv_total_bytes == 0  # the cache is gone once the decode ended
