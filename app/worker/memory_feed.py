"""Worker side: forward engine.memory samples (RSS, live KV-cache bytes, GPU) to the GUI.

One `MemorySampler` runs for the worker's lifetime; its KV source follows whatever decode
is running (nothing between jobs). Samples are tagged with the current job id.
"""
from __future__ import annotations

from app.worker import protocol as P

INTERVAL_S = 0.25  # 4 Hz is plenty for a status bar; the comparison samples on its own


class MemoryFeed:
    def __init__(self, ctx, interval_s: float = INTERVAL_S) -> None:
        from engine.memory import MemorySampler

        self.ctx = ctx
        self.sampler = MemorySampler(interval_s=interval_s, kv_source=self._kv, device=None, max_samples=256)
        self.sampler.subscribe(self._forward)

    def _kv(self):
        from engine.results import KVCacheBytes

        return self.ctx.live_kv() or KVCacheBytes()

    def _forward(self, sample) -> None:
        if not self.ctx.feed_paused:
            self.ctx.emit(P.MEMORY, self.ctx.current_job, sample=sample_dict(sample), label=None)

    def start(self) -> None:
        self.sampler.start()

    def stop(self) -> None:
        self.sampler.stop()


def sample_dict(sample) -> dict:
    """MemorySample.to_dict() plus the KV total, ready for the GUI."""
    d = sample.to_dict() if hasattr(sample, "to_dict") else dict(sample)
    d["kv_bytes"] = int(d.get("kv_self_bytes") or 0) + int(d.get("kv_cross_bytes") or 0)
    return d
