"""Surviving CUDA out-of-memory in a batched decode: halve the batch, retry, then fall back to the CPU.

`run_with_oom_fallback(decode_windows, indices, batch_size)` drives any batched loop that
can be written as `decode_windows(list_of_window_indices) -> list_of_results`. It yields
`(indices, results)` batch by batch, in order, every window exactly once. A CUDA OOM
(`torch.cuda.OutOfMemoryError`, or a RuntimeError saying "out of memory") frees what it can,
halves the batch and retries the same windows; at batch 1 it calls `to_cpu()` once, logs
a warning, and carries on there. Re-exported by `engine.batching`.
"""
from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, TypeVar

import torch

if TYPE_CHECKING:
    from engine.model_sources import LoadedModel

log = logging.getLogger(__name__)

R = TypeVar("R")


def is_oom_error(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


@dataclass
class FallbackState:
    """Where the fallback stands; shared with the caller so it can report it."""

    batch_size: int
    on_cpu: bool = False
    oom_events: int = 0


def free_cuda_memory() -> None:
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def move_to_cpu(loaded: "LoadedModel") -> "LoadedModel":
    """The same model moved to the CPU in float32 (float16 matmuls are slow or missing there)."""
    loaded.model.to(device="cpu", dtype=torch.float32)
    free_cuda_memory()
    return replace(loaded, device=torch.device("cpu"), dtype=torch.float32)


def run_with_oom_fallback(decode_windows: Callable[[list[int]], Sequence[R]], indices: Sequence[int],
                          batch_size: int, *, to_cpu: Callable[[], None] | None = None,
                          state: FallbackState | None = None) -> Iterator[tuple[list[int], list[R]]]:
    """Yield (window indices, their results) batch by batch, in order, each window exactly once.

    `decode_windows(indices)` must return one result per index and have no side effects that
    a retry would repeat. On CUDA out-of-memory the batch is halved and the same windows are
    retried; at batch 1 `to_cpu()` is called once (it must move the model so that the next
    `decode_windows` runs on the CPU) and the window is retried there. Without `to_cpu`, or if
    the CPU runs out too, the error propagates.
    """
    st = state or FallbackState(max(1, batch_size))
    order = list(indices)
    pos = 0
    while pos < len(order):
        group = order[pos : pos + st.batch_size]
        oom = False
        try:
            results = list(decode_windows(group))
        except Exception as e:
            if not is_oom_error(e) or st.on_cpu:
                raise
            oom = True
            detail = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        if oom:  # outside the except block, so the traceback's tensors can be freed
            st.oom_events += 1
            free_cuda_memory()
            if st.batch_size > 1:
                st.batch_size = max(1, st.batch_size // 2)
                log.warning("CUDA out of memory on %d windows (%s); retrying with batch size %d",
                            len(group), detail, st.batch_size)
                continue
            if to_cpu is None:
                raise torch.cuda.OutOfMemoryError(f"CUDA out of memory even with batch size 1: {detail}")
            log.warning("CUDA out of memory even with batch size 1 (%s); continuing on the CPU, which is slower",
                        detail)
            to_cpu()
            st.on_cpu = True
            continue
        if len(results) != len(group):
            raise ValueError(f"decode_windows returned {len(results)} results for {len(group)} windows")
        yield group, results
        pos += len(group)
