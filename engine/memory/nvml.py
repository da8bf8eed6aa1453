"""NVML (nvidia-ml-py) device memory: used / total for a GPU and this process's share.

`nvmlInit` runs once per process; when it fails, the reason is kept and every later call
returns it at no cost. Reasons are phrased for users: "no NVIDIA GPU found" when the
machine has no NVIDIA PCI device (checked in /sys on Linux; always so on macOS),
"NVIDIA driver not available" when there is a GPU but no usable driver, and so on.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NvmlMemory:
    name: str
    used_bytes: int  # whole device, all processes
    total_bytes: int
    process_bytes: int | None  # this process; None when the driver does not say
    process_reason: str | None = None  # why process_bytes is None


def nvidia_pci_present() -> bool | None:
    """Whether an NVIDIA PCI device (vendor 0x10de) exists; None when the OS does not tell."""
    if sys.platform == "darwin":
        return False
    root = Path("/sys/bus/pci/devices")
    if not root.is_dir():
        return None
    try:
        return any((d / "vendor").read_text().strip().lower() == "0x10de" for d in root.iterdir())
    except OSError:
        return None


def failure_reason(exc: BaseException) -> str:
    import pynvml

    no_gpu = nvidia_pci_present() is False
    if isinstance(exc, (pynvml.NVMLError_LibraryNotFound, pynvml.NVMLError_DriverNotLoaded)):
        if no_gpu:
            return "no NVIDIA GPU found"
        if isinstance(exc, pynvml.NVMLError_DriverNotLoaded):
            return "NVIDIA driver not loaded"
        return "NVIDIA driver not available (NVML library not found)"
    if isinstance(exc, pynvml.NVMLError_NoPermission):
        return "no permission to query the NVIDIA driver"
    if isinstance(exc, pynvml.NVMLError_LibRmVersionMismatch):
        return "NVIDIA driver and library versions differ (reboot after a driver update?)"
    return f"NVML error: {exc}"


class _Nvml:
    """nvmlInit once per process; remembers why it failed so later calls are free."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reason: str | None = None
        self.tried = False

    def init(self) -> str | None:
        with self.lock:
            if not self.tried:
                self.tried = True
                self.reason = self._init()
            return self.reason

    @staticmethod
    def _init() -> str | None:
        try:
            import pynvml
        except ImportError:
            return "nvidia-ml-py (pynvml) not installed"
        try:
            pynvml.nvmlInit()
            if pynvml.nvmlDeviceGetCount() == 0:
                return "no NVIDIA GPU found"
        except Exception as e:
            return failure_reason(e)
        return None


_NVML = _Nvml()


def init_reason() -> str | None:
    """None when NVML is usable, else why not."""
    return _NVML.init()


# A sampler asks 20 times a second, from a thread beside a decode loop that is often bound by
# Python: every driver call there hands the GIL back and forth. The handle and name of a GPU
# never change, so they are looked up once. Device memory is read at most every
# DEVICE_REFRESH_S (torch's allocator counters, read on every tick, are the exact signal for
# this process; NVML adds what other processes and the CUDA context hold), and this process's
# usage, the slowest call (it walks every process on the GPU), every PROCESS_REFRESH_S.
DEVICE_REFRESH_S = 0.2
PROCESS_REFRESH_S = 0.5
_memory_cache: dict[int, tuple[float, NvmlMemory]] = {}
_handles: dict[int | None, tuple[object, str]] = {}
_process_cache: dict[int, tuple[float, tuple[int | None, str | None]]] = {}
T = TypeVar("T")


def _handle(index: int | None, torch) -> tuple[object, str]:
    """(NVML handle, name) of the GPU torch calls `cuda:index` (matched by UUID when torch has CUDA up)."""
    key = index if torch is None else (index if index is not None else torch.cuda.current_device())
    hit = _handles.get(key)
    if hit is not None:
        return hit
    import pynvml

    handle = None
    if torch is not None:
        try:
            uuid = str(torch.cuda.get_device_properties(key).uuid)
            handle = pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}")
        except Exception:
            index = key  # fall through to the index mapping
    if handle is None:
        idx = index or 0
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
        if visible and all(v.strip().isdigit() for v in visible) and idx < len(visible):
            idx = int(visible[idx])
        handle = pynvml.nvmlDeviceGetHandleByIndex(idx)
    name = pynvml.nvmlDeviceGetName(handle)
    name = name.decode() if isinstance(name, bytes) else str(name)
    _handles[key] = (handle, name)
    return handle, name


def _recent(cache: dict, key: int, max_age_s: float, read: Callable[[], T]) -> T:
    """`read()`, or what it returned for `key` less than `max_age_s` ago."""
    now = time.monotonic()
    hit = cache.get(key)
    if hit is not None and now - hit[0] < max_age_s:
        return hit[1]
    value = read()
    cache[key] = (now, value)
    return value


def _process_usage(handle) -> tuple[int | None, str | None]:
    return _recent(_process_cache, id(handle), PROCESS_REFRESH_S, lambda: _read_process_usage(handle))


def _read_process_usage(handle) -> tuple[int | None, str | None]:
    import pynvml

    try:
        procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
    except Exception as e:
        return None, f"per-process usage not reported ({e})"
    for p in procs:
        if int(p.pid) == os.getpid():
            used = getattr(p, "usedGpuMemory", None)
            if used is None or used >= (1 << 64) - 1:
                return None, "per-process usage not reported by the driver"
            return int(used), None
    return None, "this process is not listed by the driver (no CUDA context yet, or a container PID namespace)"


_v2_works: bool | None = None


def _memory_info(pynvml, handle):
    """Memory info, v2 where the driver has it: v1's `used` also counts memory the driver
    reserves for itself (about 600 MiB more than nvidia-smi showed on an H200)."""
    global _v2_works
    version = getattr(pynvml, "nvmlMemory_v2", None)
    if version is not None and _v2_works is not False:
        try:
            info = pynvml.nvmlDeviceGetMemoryInfo(handle, version=version)
            _v2_works = True
            return info
        except Exception as e:  # an older driver: fall back to v1 from now on
            log.debug("NVML memory info v2 unavailable (%s); using v1", e)
            _v2_works = False
    return pynvml.nvmlDeviceGetMemoryInfo(handle)


def query(index: int | None, torch=None) -> tuple[NvmlMemory | None, str | None]:
    """(memory of GPU `index`, None) or (None, reason). `torch`: the module when CUDA is in use."""
    reason = init_reason()
    if reason is not None:
        return None, reason
    try:
        import pynvml

        handle, name = _handle(index, torch)

        def read() -> NvmlMemory:
            info = _memory_info(pynvml, handle)
            return NvmlMemory(name, int(info.used), int(info.total), *_process_usage(handle))

        return _recent(_memory_cache, id(handle), DEVICE_REFRESH_S, read), None
    except Exception as e:
        return None, f"NVML query failed ({e})"
