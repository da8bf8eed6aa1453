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
from dataclasses import dataclass
from pathlib import Path

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


def _handle(index: int | None, torch) -> object:
    """NVML handle of the GPU torch calls `cuda:index` (matched by UUID when torch has CUDA up)."""
    import pynvml

    if torch is not None:
        idx = index if index is not None else torch.cuda.current_device()
        try:
            uuid = str(torch.cuda.get_device_properties(idx).uuid)
            return pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}")
        except Exception:
            index = idx  # fall through to the index mapping
    idx = index or 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
    if visible and all(v.strip().isdigit() for v in visible) and idx < len(visible):
        idx = int(visible[idx])
    return pynvml.nvmlDeviceGetHandleByIndex(idx)


def _process_usage(handle) -> tuple[int | None, str | None]:
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


def query(index: int | None, torch=None) -> tuple[NvmlMemory | None, str | None]:
    """(memory of GPU `index`, None) or (None, reason). `torch`: the module when CUDA is in use."""
    reason = init_reason()
    if reason is not None:
        return None, reason
    try:
        import pynvml

        handle = _handle(index, torch)
        info = pynvml.nvmlDeviceGetMemoryInfo(handle)
        name = pynvml.nvmlDeviceGetName(handle)
        name = name.decode() if isinstance(name, bytes) else str(name)
        proc, proc_reason = _process_usage(handle)
        return NvmlMemory(name, int(info.used), int(info.total), proc, proc_reason), None
    except Exception as e:
        return None, f"NVML query failed ({e})"
