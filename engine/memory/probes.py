"""One-shot memory probes: process RSS, torch's CUDA allocator, NVML, and a combined sample.

Rules every probe keeps: it never raises and never makes a number up. A GPU probe that
cannot answer returns None together with a short human reason ("no NVIDIA GPU found",
"NVIDIA driver not available", "model runs on CPU", ...), so the app can say why a field
is empty instead of showing 0.

* `rss_bytes()`: resident set size of this process (psutil).
* `torch_cuda_memory(device)`: allocated / reserved / peak-allocated bytes of torch's
  caching allocator, only when this process has already initialised CUDA (probing never
  creates a CUDA context, which alone would cost hundreds of MiB of device memory).
* `nvml_memory(device)`: device used / total bytes and this process's usage as reported
  by `nvmlDeviceGetComputeRunningProcesses` (None where the driver does not report it,
  e.g. inside containers with their own PID namespace).
* `gpu_status()`: a `GpuStatus` for UI labels.
* `take_sample(t, kv, device)`: all of the above in one `MemorySample`.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
from dataclasses import asdict, dataclass
from typing import Any

from engine.memory import nvml
from engine.memory.nvml import NvmlMemory
from engine.results import KVCacheBytes

log = logging.getLogger(__name__)

ON_CPU = "model runs on CPU"


@dataclass(frozen=True)
class MemorySample:
    """Memory at one instant; byte fields that a probe could not read are None."""

    t: float  # seconds since the sampler started
    rss_bytes: int
    kv_self_bytes: int
    kv_cross_bytes: int
    torch_allocated_bytes: int | None = None
    torch_reserved_bytes: int | None = None
    torch_peak_bytes: int | None = None
    device_used_bytes: int | None = None
    device_total_bytes: int | None = None
    process_device_bytes: int | None = None

    @property
    def kv_total_bytes(self) -> int:
        return self.kv_self_bytes + self.kv_cross_bytes

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["t"] = round(self.t, 4)
        return d


@dataclass(frozen=True)
class TorchCudaMemory:
    allocated_bytes: int
    reserved_bytes: int
    peak_bytes: int  # torch.cuda.max_memory_allocated since the last reset


@dataclass(frozen=True)
class GpuStatus:
    available: bool
    name: str | None
    reason: str | None  # why not available (or what is missing); None when all is well

    def label(self) -> str:
        """The app's one-line memory caption."""
        if self.available:
            extra = f" ({self.reason})" if self.reason else ""
            return f"GPU memory: {self.name}{extra}"
        return f"GPU memory: {self.reason or 'unavailable'}; showing process memory and KV-cache bytes"


# -- process RSS --------------------------------------------------------------------------
_proc_lock = threading.Lock()
_proc: Any = None
_proc_pid = -1


def rss_bytes() -> int | None:
    """Resident set size of this process in bytes; None only if the OS refuses to say."""
    global _proc, _proc_pid
    try:
        with _proc_lock:
            if _proc is None or _proc_pid != os.getpid():  # re-create after fork
                import psutil

                _proc, _proc_pid = psutil.Process(), os.getpid()
            proc = _proc
        return int(proc.memory_info().rss)
    except Exception as e:  # psutil.Error, ImportError, OSError: report nothing rather than a guess
        log.debug("RSS unreadable: %s", e)
        return None


# -- torch CUDA allocator -----------------------------------------------------------------
def _device_type_and_index(device: Any) -> tuple[str, int | None]:
    """("cuda", index or None) / ("cpu", None) for None, "cuda:1", torch.device(...), an int."""
    if device is None:
        return "cuda", None
    if isinstance(device, int):
        return "cuda", device
    text = str(device)
    kind, _, idx = text.partition(":")
    if kind in ("auto", ""):
        return "cuda", None
    return kind, int(idx) if idx.isdigit() else None


def _torch_cuda_in_use() -> tuple[Any, str | None]:
    torch = sys.modules.get("torch")
    if torch is None:
        return None, "torch not loaded"
    try:
        if not torch.cuda.is_available():
            return None, "CUDA not available to torch"
        if not torch.cuda.is_initialized():
            return None, "CUDA not in use yet"
    except Exception as e:
        return None, f"torch CUDA query failed ({e})"
    return torch, None


def torch_cuda_memory(device: Any = None) -> tuple[TorchCudaMemory | None, str | None]:
    """(allocator bytes, None) or (None, reason); `device` None means torch's current device."""
    kind, index = _device_type_and_index(device)
    if kind != "cuda":
        return None, ON_CPU
    torch, reason = _torch_cuda_in_use()
    if torch is None:
        return None, reason
    try:
        dev = torch.device("cuda", index if index is not None else torch.cuda.current_device())
        return _allocator_counters(torch, dev), None
    except Exception as e:
        return None, f"torch CUDA query failed ({e})"


def _allocator_counters(torch, dev) -> TorchCudaMemory:
    """Allocated, reserved and peak bytes from one allocator query.

    `memory_allocated()` & co. each rebuild the flat `memory_stats()` dict (about 85 us on an
    H200); its nested source is the same numbers in about 14 us, and a sampler reads it 20
    times a second beside a decode loop that competes for the GIL.
    """
    nested = getattr(torch.cuda.memory, "memory_stats_as_nested_dict", None)
    if nested is not None:
        stats = nested(dev)
        try:
            return TorchCudaMemory(int(stats["allocated_bytes"]["all"]["current"]),
                                   int(stats["reserved_bytes"]["all"]["current"]),
                                   int(stats["allocated_bytes"]["all"]["peak"]))
        except (KeyError, TypeError):  # another layout in some torch version: the flat form below
            pass
    flat = torch.cuda.memory_stats(dev)
    return TorchCudaMemory(int(flat.get("allocated_bytes.all.current", 0)),
                           int(flat.get("reserved_bytes.all.current", 0)),
                           int(flat.get("allocated_bytes.all.peak", 0)))


# -- NVML -----------------------------------------------------------------------------------
def nvml_memory(device: Any = None) -> tuple[NvmlMemory | None, str | None]:
    """(device memory, None) or (None, reason); `device` None means torch's current GPU or GPU 0."""
    kind, index = _device_type_and_index(device)
    if kind != "cuda":
        return None, ON_CPU
    torch, _ = _torch_cuda_in_use()
    return nvml.query(index, torch)


def gpu_status(device: Any = None) -> GpuStatus:
    """Is there an NVIDIA GPU whose memory we can show? For the app's memory caption."""
    mem, reason = nvml_memory(device if device is not None else "cuda")
    if mem is not None:
        return GpuStatus(True, mem.name, None)
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            idx = _device_type_and_index(device)[1] or 0
            return GpuStatus(True, torch.cuda.get_device_name(idx), f"NVML unavailable: {reason}; torch allocator only")
    except Exception as e:
        log.debug("torch CUDA query failed: %s", e)
    return GpuStatus(False, None, reason)


# -- everything at once ------------------------------------------------------------------
def take_sample(t: float, kv: KVCacheBytes | None = None, device: Any = "cpu") -> MemorySample | None:
    """One `MemorySample` (None only when even the RSS cannot be read)."""
    rss = rss_bytes()
    if rss is None:
        return None
    kv = kv or KVCacheBytes()
    alloc, _ = torch_cuda_memory(device)
    nv, _ = nvml_memory(device)
    return MemorySample(
        t=t, rss_bytes=rss, kv_self_bytes=kv.self_attn, kv_cross_bytes=kv.cross_attn,
        torch_allocated_bytes=alloc.allocated_bytes if alloc else None,
        torch_reserved_bytes=alloc.reserved_bytes if alloc else None,
        torch_peak_bytes=alloc.peak_bytes if alloc else None,
        device_used_bytes=nv.used_bytes if nv else None,
        device_total_bytes=nv.total_bytes if nv else None,
        process_device_bytes=nv.process_bytes if nv else None,
    )
