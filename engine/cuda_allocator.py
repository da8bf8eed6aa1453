"""Ask PyTorch's CUDA allocator for expandable segments before a model reaches the GPU.

The decoder's cache grows by one token per step: every step frees each layer's cache tensor
and allocates one a little larger. With the allocator's default fixed-size segments the
freed blocks cannot serve the larger requests, so reserved memory runs far ahead of what is
allocated. Measured on an H200 (large-v3 shapes, float16, 448 forced positions,
`bench/bench_gpu.py`): stock at batch 64 held 22.8 GB allocated but 44.8 GB reserved, and the
batch `plan_batch` picked for MLA 87.5% + exact cross under an 8 GiB cap (315 windows,
7.9 GiB allocated at the end) ran out of memory; with expandable segments the same run
fitted (peak reserved 8.1 GiB) at the same speed. Segments that grow in place are what
PyTorch recommends for this pattern.

The setting must be made before CUDA's allocator starts, so `resolve_model` calls this
before it moves weights to a GPU. A user's own PYTORCH_CUDA_ALLOC_CONF / PYTORCH_ALLOC_CONF
is left alone. Linux only: PyTorch does not offer expandable segments on Windows.
"""
from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)

SETTING = "expandable_segments:True"
ENV_NAMES = ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF")


def _current_settings(torch) -> str | None:
    """The allocator settings in force (reading them makes PyTorch parse the environment), or None
    where this torch cannot say."""
    getter = getattr(torch._C, "_accelerator_getAllocatorSettings", None)
    if getter is None:
        return None
    try:
        return str(getter()).replace(" ", "")
    except Exception as e:  # noqa: BLE001 - a private hook; without it we trust the environment
        log.debug("allocator settings unreadable: %s", e)
        return None


def _switch(torch) -> None:
    """Change the settings of an allocator that has already read them (new segments follow)."""
    setter = getattr(torch._C, "_accelerator_setAllocatorSettings", None)
    if setter is None:  # older torch: the same switch under its earlier name
        setter = torch.cuda.memory._set_allocator_settings
    setter(SETTING)


def prefer_expandable_segments() -> str:
    """Turn expandable segments on where possible; returns what was done (for logs and tests)."""
    if not sys.platform.startswith("linux"):
        return "not offered on this platform"
    for name in ENV_NAMES:
        if os.environ.get(name) and os.environ[name] != SETTING:  # the user's own choice (ours is SETTING)
            return f"left to {name}={os.environ[name]}"
    import torch

    os.environ["PYTORCH_CUDA_ALLOC_CONF"] = SETTING  # read when the allocator first needs its settings
    current = _current_settings(torch)
    in_force = SETTING in current if current is not None else not torch.cuda.is_initialized()
    if in_force:
        log.info("CUDA allocator: expandable segments (the growing KV cache would fragment fixed segments)")
        return "set for this process"
    try:  # the allocator had read its settings before: switch them at runtime
        _switch(torch)
    except Exception as e:  # noqa: BLE001 - a missing or changed private hook costs memory, never a run
        log.debug("could not enable expandable segments after the allocator started: %s", e)
        return f"allocator already configured ({e})"
    log.info("CUDA allocator: expandable segments (switched at runtime)")
    return "switched at runtime"
