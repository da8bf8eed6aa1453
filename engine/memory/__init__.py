"""Memory measurement: one-shot probes and a background sampler.

* `engine.memory.probes`: process RSS (psutil), torch's CUDA allocator, NVML (device and
  this process), exact KV-cache bytes; `gpu_status()` for UI labels. GPU probes return
  None plus a human reason when there is no GPU; nothing raises, nothing is made up.
* `engine.memory.nvml`: the NVML part of the probes (init once, reasons, per-process usage).
* `engine.memory.sampler`: `MemorySampler`, a daemon thread taking `MemorySample`s at
  20 Hz, with subscribers (the GUI chart), a bounded timeline and peaks.
* `engine.memory.oom`: CUDA out-of-memory fallback for batched decoding (halve, retry, CPU).
* `engine.memory.plot`: PNG chart of a comparison report (matplotlib, optional).

Imported lazily so `import engine.memory` costs nothing.
"""
from __future__ import annotations

from engine.lazy_exports import lazy_getattr

_EXPORTS = {
    "MemorySample": "engine.memory.probes",
    "GpuStatus": "engine.memory.probes",
    "gpu_status": "engine.memory.probes",
    "take_sample": "engine.memory.probes",
    "rss_bytes": "engine.memory.probes",
    "torch_cuda_memory": "engine.memory.probes",
    "nvml_memory": "engine.memory.probes",
    "MemorySampler": "engine.memory.sampler",
    "MemoryPeak": "engine.memory.sampler",
    "run_with_oom_fallback": "engine.memory.oom",
    "is_oom_error": "engine.memory.oom",
}

__all__ = list(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
