"""How many 30 s windows to decode at once, and surviving CUDA out-of-memory while doing it.

`choose_batch_size(loaded)` (`--batch-size auto`) picks the largest batch whose memory fits a
budget. The KV cache per window is *measured* on the model in use: one short real decode of
one window (encoder, then the prompt and one step through the decoder with the same cache
class the transcriber uses) gives the exact cross-attention bytes and the self-attention
bytes per token, which are scaled to the longest decode (448 tokens). So an MLA model (small
latent) or one with exact cross-attention (no cross cache) automatically gets a larger batch.
Per window the estimate is

    encoder output + KV cache x rows + logits

with rows = beam size (the rows of a window share its encoder output; beam search reorders
the self-attention cache one layer at a time). Once per batch comes the larger of two things
that never overlap the batch's decode: one encoder call over `ENCODER_CHUNK` windows
(features, plus activations measured with torch's allocator on CUDA, estimated on CPU:
hidden states of one layer, plus the score matrix when the attention is not SDPA/flash),
and one temperature-fallback window decoded again with `best_of` rows.

`run_with_oom_fallback(decode_windows, indices, batch_size)` (from `engine.memory.oom`, re-exported
here) runs a batched loop: on CUDA out-of-memory it halves the batch and retries the same
windows (results are yielded once, in order), down to 1, then moves the model to the CPU
(via the `to_cpu` callback) and logs it.
"""
from __future__ import annotations

import logging
import re
import weakref
from dataclasses import dataclass
from typing import Any

import torch

from engine.decoding import ENCODER_CHUNK
from engine.memory.oom import FallbackState, free_cuda_memory, is_oom_error, move_to_cpu, run_with_oom_fallback
from engine.model_sources import LoadedModel

log = logging.getLogger(__name__)

MAX_TOKENS = 448  # Whisper's decoder context
N_FRAMES_ENC = 1500  # encoder positions of one 30 s window
CPU_MAX_BATCH = 16
# on an H200, large-v3 MLA 87.5% + exact cross: windows/s 4.81 at batch 64 and 9.02 at 128, the step
# bound by kernel launches (29 ms either way; docs/measurements/gpu-s8/run4.sh, after engine/mla/heads.py;
# before that fix they flattened past 64: 3.31, 3.65 at 128, 3.18 at 315). Larger batches are not
# measured since the fix, and each one delays the first text of a long file by a whole batch.
CUDA_MAX_BATCH = 128
MAX_BATCH = 256  # what a user may ask for; past the measured range, and each one delays the first text
MIN_MARGIN = 256 << 20


# -- sizes --------------------------------------------------------------------------------------
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str | int) -> int:
    """Bytes from "6GB", "6G", "6 GiB", "512MB", "1.5g" or a plain number of bytes.

    Memory sizes, so every unit is a power of 1024 (as GPU vendors, `free -h` and Docker use them).
    """
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(?:i?b)?\s*", str(text), re.IGNORECASE)
    if not m:
        raise ValueError(f"not a memory size: {text!r} (examples: 6GB, 512MiB, 1.5G)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_batch_size(text: str) -> int | str:
    """argparse type for --batch-size: a positive integer or "auto"."""
    if str(text).strip().lower() == "auto":
        return "auto"
    try:
        n = int(text)
    except ValueError:
        raise ValueError(f"batch size must be an integer from 1 to {MAX_BATCH} or 'auto', not {text!r}") from None
    if not 1 <= n <= MAX_BATCH:
        raise ValueError(f"batch size must be an integer from 1 to {MAX_BATCH} or 'auto' (the largest that fits "
                         f"the memory), not {n}")
    return n


# -- measuring one window -----------------------------------------------------------------------
@dataclass(frozen=True)
class WindowCache:
    """Measured KV-cache cost of one decoder row (one window, one beam) of a model."""

    self_bytes_per_token: int  # all decoder layers
    cross_bytes: int  # all decoder layers, one window (0 with exact cross-attention)
    encoder_out_bytes: int  # (1500, d) in the model dtype
    encoder_activation_bytes: int  # transient peak of one window through the encoder
    activation_measured: bool  # True on CUDA (allocator peak), False: formula
    logits_bytes_per_row: int
    max_tokens: int = MAX_TOKENS  # the decoder's context: the longest a self-attention cache gets

    @property
    def self_bytes_max(self) -> int:
        return self.self_bytes_per_token * self.max_tokens

    def window_bytes(self, rows: int = 1) -> int:
        """Memory one window of a batch holds while decoded with `rows` rows (beams or samples).

        Its encoder output (once: the rows of a window share it), `rows` KV caches (beam search
        reorders the self-attention cache a layer at a time, never a second whole cache) and a
        few rows of logits. Features and encoder activations are not in it: they exist for
        `ENCODER_CHUNK` windows at a time (`encoder_bytes`).
        """
        kv = (self.self_bytes_max + self.cross_bytes) * rows
        return self.encoder_out_bytes + kv + 3 * self.logits_bytes_per_row * rows

    def encoder_bytes(self, windows: int = ENCODER_CHUNK, n_mels: int = 80) -> int:
        """Transient memory of one encoder call: features and activations of min(windows, ENCODER_CHUNK) windows."""
        return (self.encoder_activation_bytes + feature_bytes(n_mels)) * max(1, min(windows, ENCODER_CHUNK))


def feature_bytes(n_mels: int) -> int:
    """Peak of turning one 30 s window into log-mel features: samples, complex STFT, power, mel."""
    samples, bins, frames = 480_000, 201, 3001
    return samples * 4 + bins * frames * (8 + 4) + n_mels * 3000 * 4 * 2


_measured: "weakref.WeakKeyDictionary[Any, tuple[tuple, WindowCache]]" = weakref.WeakKeyDictionary()


def _signature(loaded: LoadedModel) -> tuple:
    cfg = getattr(loaded.model, "mla_config", None)
    return (str(loaded.device), str(loaded.dtype), cfg.to_json() if cfg is not None else "stock")


def _estimate_encoder_activations(loaded: LoadedModel) -> int:
    c = loaded.model.config
    item = torch.finfo(loaded.dtype).bits // 8
    scores = 0  # SDPA (flash / memory-efficient kernels) never holds the full score matrix
    if getattr(c, "_attn_implementation", "eager") not in ("sdpa", "flash_attention_2", "flash_attention_3"):
        scores = c.encoder_attention_heads * N_FRAMES_ENC * N_FRAMES_ENC * item * 2  # scores + softmax
    hidden = N_FRAMES_ENC * c.d_model * item * 8 + N_FRAMES_ENC * c.encoder_ffn_dim * item * 2
    conv = 2 * 3000 * c.d_model * item
    return scores + hidden + conv


@torch.inference_mode()
def measure_window_cache(loaded: LoadedModel) -> WindowCache:
    """One short real decode of one (silent) window: encoder, prompt, one greedy step; remembered per model."""
    sig = _signature(loaded)
    hit = _measured.get(loaded.model)
    if hit is not None and hit[0] == sig:
        return hit[1]
    from engine.features import log_mel
    from engine.kv_cache import cache_bytes, new_cache

    model, dev = loaded.model, loaded.device
    mel = log_mel(torch.zeros(1, 16000 * 30), loaded.n_mels, dev).to(dev, loaded.dtype)
    measured = dev.type == "cuda"
    if measured:
        torch.cuda.synchronize(dev)
        before = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    enc = model.model.encoder(mel).last_hidden_state
    if measured:
        torch.cuda.synchronize(dev)
        activations = int(torch.cuda.max_memory_allocated(dev) - before)
    else:
        activations = _estimate_encoder_activations(loaded)
    prompt = list(loaded.settings.sot_sequence(None if not loaded.settings.multilingual else "en", "transcribe"))
    cache = new_cache()
    tokens = torch.tensor([prompt], device=dev)
    out = model.model.decoder(input_ids=tokens, encoder_hidden_states=enc, cache=cache, use_cache=True)
    for _ in range(3):  # a few greedy steps, exactly as the token loop feeds them
        nxt = model.proj_out(out.last_hidden_state[:, -1:]).argmax(-1)
        out = model.model.decoder(input_ids=nxt, encoder_hidden_states=enc, cache=cache, use_cache=True)
    kv = cache_bytes(cache)
    n_tokens = cache.self_attention_cache.get_seq_length()
    cost = WindowCache(
        self_bytes_per_token=-(-kv.self_attn // max(1, n_tokens)), cross_bytes=kv.cross_attn,
        encoder_out_bytes=enc.numel() * enc.element_size(), encoder_activation_bytes=activations,
        activation_measured=measured, logits_bytes_per_row=model.config.vocab_size * 4,
        max_tokens=int(loaded.settings.max_target_positions))
    log.info("measured KV cache per window: self %d B/token (%d tokens), cross %d B", cost.self_bytes_per_token,
             n_tokens, cost.cross_bytes)
    _measured[loaded.model] = (sig, cost)
    return cost


# -- choosing -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchPlan:
    batch_size: int
    per_window_bytes: int
    fixed_bytes: int  # one fallback window with best_of rows
    available_bytes: int  # budget left for windows, after weights and margin
    weights_bytes: int
    budget_source: str  # "given", "cuda free memory", "available RAM"
    cap: int


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes of parameters and buffers (tied weights counted once)."""
    seen: set[int] = set()
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def batch_for_budget(per_window: int, available: int, cap: int, fixed: int = 0) -> int:
    """Largest n in [1, cap] with fixed + n * per_window <= available (1 if even that does not fit)."""
    if per_window <= 0:
        return cap
    return max(1, min(cap, (available - fixed) // per_window))


def _margin(total: int, margin: float) -> int:
    return max(MIN_MARGIN, int(total * margin))


def plan_batch(loaded: LoadedModel, budget_bytes: int | str | None = None, beam_size: int = 1, margin: float = 0.1,
               max_batch: int | None = None, n_windows: int | None = None, best_of: int = 5) -> BatchPlan:
    """The batch `choose_batch_size` picks, with the numbers behind it."""
    cost = measure_window_cache(loaded)
    weights = model_bytes(loaded.model)
    on_cuda = loaded.device.type == "cuda"
    if budget_bytes is not None:
        budget = parse_size(budget_bytes)
        available, source = budget - weights - _margin(budget, margin), "given"
    elif on_cuda:
        free, total = torch.cuda.mem_get_info(loaded.device)
        reusable = torch.cuda.memory_reserved(loaded.device) - torch.cuda.memory_allocated(loaded.device)
        available, source = free + reusable - _margin(total, margin), "cuda free memory"
    else:
        import psutil

        vm = psutil.virtual_memory()
        available, source = vm.available - _margin(vm.total, margin), "available RAM"
    cap = max_batch or (CUDA_MAX_BATCH if on_cuda else CPU_MAX_BATCH)
    if n_windows is not None:
        cap = max(1, min(cap, n_windows))
    rows = max(1, beam_size)
    per_window = cost.window_bytes(rows)
    # after the batch: failed windows are decoded again one at a time with best_of rows; before
    # it: one encoder call. Neither overlaps the batch's decode, so the larger one counts.
    fallback = cost.window_bytes(max(1, best_of)) if best_of > rows else 0
    fixed = max(fallback, cost.encoder_bytes(cap, loaded.n_mels))
    n = batch_for_budget(per_window, available, cap, fixed)
    if fixed + per_window > available:
        log.warning("memory budget (%d MiB free for windows) is below one window (%d MiB): batch 1",
                    available >> 20, per_window >> 20)
    plan = BatchPlan(n, per_window, fixed, available, weights, source, cap)
    log.info("batch size %d: %.1f MiB per window, %.0f MiB available (%s), cap %d", n, per_window / 2**20,
             available / 2**20, source, cap)
    return plan


def choose_batch_size(loaded: LoadedModel, budget_bytes: int | str | None = None, beam_size: int = 1,
                      margin: float = 0.1, max_batch: int | None = None, n_windows: int | None = None) -> int:
    """Largest batch of 30 s windows whose weights + activations + KV cache fit the budget.

    `budget_bytes` (int or "6GB") is the total for this model including its weights; default:
    free CUDA memory (weights already loaded) or available RAM, less `margin` (a fraction of
    the device's total, at least 256 MiB). Capped at 16 on CPU, 128 on CUDA, and `n_windows`.
    """
    return plan_batch(loaded, budget_bytes, beam_size, margin, max_batch, n_windows).batch_size


__all__ = ["BatchPlan", "FallbackState", "WindowCache", "batch_for_budget", "choose_batch_size", "free_cuda_memory",
           "is_oom_error", "measure_window_cache", "model_bytes", "move_to_cpu", "parse_batch_size", "parse_size",
           "plan_batch", "run_with_oom_fallback"]
