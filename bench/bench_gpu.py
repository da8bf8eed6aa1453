#!/usr/bin/env python
"""GPU memory and speed of stock Whisper vs Whisper-MLA at real model shapes (issues 3 and 5).

What it measures, on one CUDA device, in one process:

1. exactness on CUDA in float32 / float16 / bfloat16 (whisper-small shape): full-rank MLA
   logits vs stock through the cached decode, the absorbed MLA path vs the naive one, exact
   cross-attention vs stock; relative error ||a - b|| / ||b|| over every decoded step;
2. a sweep over batch sizes: peak allocated VRAM (torch's allocator, reset before each run),
   KV-cache bytes summed from the cache tensors, decode tokens/s and windows/s;
3. the largest batch that fits a fixed memory budget (default 8 GiB): the process is limited
   with `torch.cuda.set_per_process_memory_fraction`, so the allocator raises a real CUDA OOM
   past the budget; the sweep's peaks predict the limit, real runs confirm it (one that fits,
   the next larger that does not). The product's own `plan_batch` estimate is printed beside it;
4. the memory sampler's overhead on a GPU decode (< 2% is the target) and its probes against
   torch's counters and nvidia-smi;
5. the OOM fallback on a real CUDA OOM: every window decoded exactly once.

Weights are random (seeded) at the real shapes of whisper-small and large-v3: real weights
cannot travel to the device machine, and memory and speed depend on shapes, not values.
Decodes are forced: end-of-text is masked, so every row runs the full length (448 positions by
default, the decoder's context), the worst case a window can reach. The decode loop is the
product's: `WindowDecoder.encode` (chunked encoder), `WindowDecoder._logits` and
`WindowDecoder._apply_rules` (suppression and timestamp rules) every step, the engine's cache.

    python bench/bench_gpu.py --out bench/out/gpu.json               # on a CUDA machine
    python bench/bench_gpu.py --device cpu --quick                      # a dry run of the code paths
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import logging
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR.parent) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR.parent))

import torch  # noqa: E402

log = logging.getLogger("bench_gpu")

SHAPES: dict[str, dict[str, int]] = {
    # d_model, layers, heads, ffn, mels and vocabulary of the released checkpoints
    "tiny": dict(d_model=384, encoder_layers=4, decoder_layers=4, encoder_attention_heads=6,
                 decoder_attention_heads=6, encoder_ffn_dim=1536, decoder_ffn_dim=1536, num_mel_bins=80,
                 vocab_size=51865),
    "small": dict(d_model=768, encoder_layers=12, decoder_layers=12, encoder_attention_heads=12,
                  decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072, num_mel_bins=80,
                  vocab_size=51865),
    "large-v3": dict(d_model=1280, encoder_layers=32, decoder_layers=32, encoder_attention_heads=20,
                     decoder_attention_heads=20, encoder_ffn_dim=5120, decoder_ffn_dim=5120, num_mel_bins=128,
                     vocab_size=51866),
}
# name -> (KV reduction of decoder self-attention or None, exact cross-attention)
VARIANTS: dict[str, tuple[float | None, bool]] = {
    "stock": (None, False),
    "xc": (None, True),
    "mla75": (0.75, False),
    "mla87.5": (0.875, False),
    "mla87.5+xc": (0.875, True),
}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# -- models --------------------------------------------------------------------------------------
def settings_for(shape: dict[str, int]):
    """Multilingual token ids of the real vocabularies (51865: tiny..medium, 51866: large-v3)."""
    from engine.generation_settings import GenerationSettings

    v3 = shape["vocab_size"] == 51866
    return GenerationSettings(
        sot=50258, eot=50257, no_timestamps=50364 if v3 else 50363, timestamp_begin=50365 if v3 else 50364,
        vocab_size=shape["vocab_size"], multilingual=True, max_target_positions=448,
        n_mels=shape["num_mel_bins"], sot_prev=50362 if v3 else 50361, no_speech=50363 if v3 else 50362,
        transcribe=50360 if v3 else 50359, translate=50359 if v3 else 50358, lang_to_id={"en": 50259})


def build(shape_name: str, variant: str, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """A random-initialised model of the shape, converted to the variant's layout; as a LoadedModel."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from engine.mla import MLAConfig
    from engine.mla.config import rank_for_reduction
    from engine.mla.convert import apply_structure
    from engine.model_sources import LoadedModel
    from engine.results import ModelInfo

    shape = SHAPES[shape_name]
    cfg = WhisperConfig(**shape, max_source_positions=1500, max_target_positions=448)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    with torch.device(device):
        model = WhisperForConditionalGeneration(cfg)
    model.to(dtype).eval()
    reduction, xc = VARIANTS[variant]
    if reduction is not None or xc:
        modules = ("decoder-self",) if reduction is not None else ()
        ranks = {"decoder-self": [rank_for_reduction(shape["d_model"], reduction)] * shape["decoder_layers"]} \
            if reduction is not None else {}
        apply_structure(model, MLAConfig(modules=modules, ranks=ranks, init="svd", kv_reduction=reduction,
                                         exact_cross=xc, source=f"random {shape_name}"))
        model.to(device=device, dtype=dtype)  # new latent projections are made on the CPU
    model.eval()
    info = ModelInfo(source=f"random:{shape_name}", name=f"random {shape_name}", multilingual=True, kv_mode=variant)
    return LoadedModel(model, None, settings_for(shape), info, Path("."), device, dtype)


def free() -> None:
    """Collect garbage and hand cached CUDA blocks back; callers `del` their own references first."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def cuda_index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


@contextlib.contextmanager
def memory_limit(device: torch.device, budget: int):
    """Cap this process's CUDA allocator at `budget` bytes, so past it a run meets a real OOM (no-op on CPU)."""
    if device.type != "cuda":
        yield
        return
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.set_per_process_memory_fraction(budget / total, cuda_index(device))
    try:
        yield
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, cuda_index(device))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- one forced decode -------------------------------------------------------------------------
@dataclass
class Run:
    batch: int
    positions: int
    encode_s: float
    decode_s: float
    peak_allocated: int | None
    peak_reserved: int | None
    kv_self: int
    kv_cross: int
    encoder_out: int

    @property
    def wall_s(self) -> float:
        return self.encode_s + self.decode_s

    def to_dict(self) -> dict[str, Any]:
        calls = self.positions - 3 + 1  # prompt call + one call per further position (3-token prompt)
        return {**vars(self), "wall_s": self.wall_s, "windows_per_s": self.batch / self.wall_s,
                "tokens_per_s": self.batch * calls / self.decode_s, "step_ms": 1000 * self.decode_s / calls}


@torch.inference_mode()
def forced_decode(loaded, batch: int, positions: int, seed: int = 1, on_step=None, decoder=None) -> Run:
    """Encode `batch` random windows and decode until the cache holds `positions` tokens per row.

    The product's greedy step (logits at the last position, suppression + timestamp rules,
    argmax), with end-of-text masked so no row stops early.
    """
    from engine.decoding import DecodeOptions, WindowDecoder
    from engine.kv_cache import cache_bytes, new_cache

    dev, s = loaded.device, loaded.settings
    dec = decoder or WindowDecoder(loaded)
    opts = DecodeOptions(language="en")
    g = torch.Generator(device=dev).manual_seed(seed)
    sync(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    # features made a chunk at a time on the device, as the transcriber's batched mode does
    enc = dec.encode_chunks(batch, lambda i, j: torch.randn(j - i, loaded.n_mels, 3000, device=dev, generator=g))
    sync(dev)
    t1 = time.perf_counter()
    initial, _ = dec.initial_tokens(opts, None)
    tokens = torch.tensor([initial], device=dev).repeat(batch, 1)
    sample_begin = tokens.shape[1]
    cache = dec.live_cache = new_cache()
    step_input = tokens
    while True:
        logits = dec._logits(step_input, enc, cache)[:, -1]
        dec._apply_rules(logits, tokens, sample_begin, opts)
        logits[:, s.eot] = float("-inf")
        nxt = logits.argmax(dim=-1)
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        if on_step is not None:
            on_step(tokens)
        if tokens.shape[1] >= positions:
            break
        step_input = tokens[:, -1:]
    sync(dev)
    t2 = time.perf_counter()
    kv = cache_bytes(cache)
    peak = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None
    reserved = torch.cuda.max_memory_reserved(dev) if dev.type == "cuda" else None
    run = Run(batch, int(cache.self_attention_cache.get_seq_length()), t1 - t0, t2 - t1, peak, reserved,
              kv.self_attn, kv.cross_attn, enc.numel() * enc.element_size())
    dec.live_cache = None
    return run


def try_decode(loaded, batch: int, positions: int) -> Run | None:
    """A forced decode, or None on CUDA out-of-memory (memory freed before returning)."""
    from engine.memory.oom import is_oom_error

    oom = False
    try:
        return forced_decode(loaded, batch, positions)
    except Exception as e:  # noqa: BLE001 - only OOM is expected; anything else is re-raised
        if not is_oom_error(e):
            raise
        oom = True
    if oom:
        free()
    return None


# -- 1. exactness ----------------------------------------------------------------------------------
@torch.inference_mode()
def step_logits(loaded, tokens: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
    """Teacher-forced logits of every position, fed one token at a time through the cache."""
    from engine.kv_cache import new_cache

    model = loaded.model
    enc = model.model.encoder(mel.to(loaded.device, loaded.dtype)).last_hidden_state
    cache = new_cache()
    out = []
    for i in range(tokens.shape[1]):
        h = model.model.decoder(input_ids=tokens[:, i : i + 1], encoder_hidden_states=enc, cache=cache,
                                use_cache=True).last_hidden_state
        out.append(model.proj_out(h).float())
    return torch.cat(out, dim=1)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


def exactness(shape_name: str, device: torch.device, dtypes: list[str], n_tokens: int) -> list[dict[str, Any]]:
    from engine.mla import convert_model
    from engine.mla.convert import set_attention_path

    rows = []
    g = torch.Generator().manual_seed(3)
    shape = SHAPES[shape_name]
    mel = torch.randn(2, shape["num_mel_bins"], 3000, generator=g)
    for dname in dtypes:
        dtype = DTYPES[dname]
        stock = build(shape_name, "stock", device, dtype)
        s = stock.settings
        tokens = torch.cat([torch.tensor([[s.sot, 50259, s.transcribe]] * 2),
                            torch.randint(0, s.eot, (2, n_tokens - 3), generator=g)], dim=1).to(device)
        ref = step_logits(stock, tokens, mel)
        checks = {}
        for label, kwargs in (("full-rank MLA", dict(rank=shape["d_model"], init="svd")),
                              ("exact cross", dict(modules=(), exact_cross=True))):
            other = copy.deepcopy(stock)
            convert_model(other.model, **kwargs)
            other.model.to(device=device, dtype=dtype)
            checks[label] = rel_err(step_logits(other, tokens, mel), ref)
            del other
            free()
        mla = copy.deepcopy(stock)
        convert_model(mla.model, kv_reduction=0.75, init="svd")
        mla.model.to(device=device, dtype=dtype)
        set_attention_path(mla.model, "naive")
        naive = step_logits(mla, tokens, mel)
        set_attention_path(mla.model, "absorbed")
        absorbed = step_logits(mla, tokens, mel)
        checks["absorbed vs naive (75%)"] = rel_err(absorbed, naive)
        agree = float((absorbed.argmax(-1) == naive.argmax(-1)).float().mean())
        for label, err in checks.items():
            rows.append({"dtype": dname, "check": label, "rel_err": err})
        rows.append({"dtype": dname, "check": "absorbed vs naive argmax agreement", "rel_err": None,
                     "agreement": agree})
        log.info("exactness %s: %s", dname, {k: f"{v:.2e}" for k, v in checks.items()})
        del stock, mla, ref, naive, absorbed
        free()
    return rows


# -- 2. sweep and 3. budget ----------------------------------------------------------------------------
def sweep(shape_name: str, variants: list[str], batches: list[int], positions: int, device, dtype,
          deadline: float) -> dict[str, Any]:
    from engine.batching import model_bytes

    out: dict[str, Any] = {}
    for variant in variants:
        loaded = build(shape_name, variant, device, dtype)
        forced_decode(loaded, 1, 8)  # warm-up: kernels, absorbed weights
        runs = []
        for b in batches:
            if time.monotonic() > deadline:
                log.warning("deadline: sweep of %s %s stops before batch %d", shape_name, variant, b)
                break
            run = try_decode(loaded, b, positions)
            runs.append(run.to_dict() if run else {"batch": b, "oom": True})
            if run:
                log.info("%s %-10s b=%-3d peak %7.0f MiB  kv self %7.1f MiB cross %7.1f MiB  %6.1f tok/s/row "
                         "%8.0f tok/s  %.2f win/s", shape_name, variant, b, (run.peak_allocated or 0) / 2**20,
                         run.kv_self / 2**20, run.kv_cross / 2**20, run.to_dict()["tokens_per_s"] / b,
                         run.to_dict()["tokens_per_s"], run.to_dict()["windows_per_s"])
        out[variant] = {"weights_bytes": model_bytes(loaded.model), "runs": runs}
        del loaded
        free()
    return out


def plan_for(loaded, budget: int) -> dict[str, Any]:
    from engine.batching import plan_batch

    plan = plan_batch(loaded, budget_bytes=budget, max_batch=100_000)
    return {"batch": plan.batch_size, "per_window_bytes": plan.per_window_bytes, "fixed_bytes": plan.fixed_bytes}


def max_batch(shape_name: str, variant: str, sweep_runs: list[dict[str, Any]], budget: int, positions: int,
              device, dtype, deadline: float, tries: int = 5) -> dict[str, Any]:
    """Largest batch under the budget: predicted from the sweep's peaks, confirmed by real runs."""
    ok = [r for r in sweep_runs if not r.get("oom") and r.get("peak_allocated")]
    if len(ok) < 2:
        return {"error": "sweep has fewer than two runs"}
    a, b = ok[-2], ok[-1]
    slope = (b["peak_allocated"] - a["peak_allocated"]) / (b["batch"] - a["batch"])
    intercept = b["peak_allocated"] - slope * b["batch"]
    predicted = max(1, int((budget - intercept) // slope))
    loaded = build(shape_name, variant, device, dtype)
    planned = plan_for(loaded, budget)
    fits: dict[int, Run] = {}
    fails: set[int] = set()
    n = predicted
    with memory_limit(device, budget):
        for _ in range(tries):
            if time.monotonic() > deadline:
                break
            free()
            run = try_decode(loaded, n, positions)
            log.info("budget %s %s: batch %d %s", shape_name, variant, n,
                     f"fits (peak {mib(run.peak_allocated)} MiB)" if run else "OOM")
            if run:
                fits[n] = run
                up = n + max(1, n // 25)
                if up in fails:
                    break
                n = up
            else:
                fails.add(n)
                down = max(1, n - max(1, n // 25))
                if down in fits or n == 1:
                    break
                n = down
    best = max(fits) if fits else None
    result = {"predicted": predicted, "plan_batch": planned, "max_fit": best,
              "smallest_oom": min((f for f in fails if best is None or f > best), default=None),
              "slope_bytes_per_window": slope, "intercept_bytes": intercept}
    if best is not None:
        result["run"] = fits[best].to_dict()
    return result


# -- 4. sampler overhead and probes -------------------------------------------------------------------
def sampler_check(shape_name: str, variant: str, batch: int, positions: int, device, dtype,
                  repeats: int = 5, interval_s: float = 0.05) -> dict[str, Any]:
    """Decode wall time with and without a 20 Hz sampler (alternating order), then probes vs independent readings."""
    from engine.decoding import WindowDecoder
    from engine.memory import MemorySampler
    from engine.memory.probes import take_sample

    loaded = build(shape_name, variant, device, dtype)
    dec = WindowDecoder(loaded)
    forced_decode(loaded, batch, 16, decoder=dec)
    plain, sampled, ticks = [], [], []
    for k in range(repeats):
        for with_sampler in ((False, True) if k % 2 == 0 else (True, False)):
            if not with_sampler:
                plain.append(forced_decode(loaded, batch, positions, decoder=dec).wall_s)
                continue
            smp = MemorySampler(interval_s=interval_s, kv_source=dec.live_kv_bytes, device=device)
            with smp:
                sampled.append(forced_decode(loaded, batch, positions, decoder=dec).wall_s)
            ticks.append({"samples": smp.sample_count, "cpu_s": smp.cpu_time_s,
                          "peak_kv": smp.peak().to_dict().get("kv_total_bytes")})
    sync(device)
    sample = take_sample(0.0, device=device)
    torch_alloc = torch.cuda.memory_allocated(device) if device.type == "cuda" else None
    try:
        smi_out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used,memory.total", "--format=csv,noheader,nounits",
                                  "-i", str(cuda_index(device))], capture_output=True, text=True, timeout=20)
        used, total = (int(x) for x in smi_out.stdout.strip().split(","))
        smi: dict[str, Any] = {"used_mib": used, "total_mib": total}
    except Exception as e:  # noqa: BLE001
        smi = {"error": str(e)}
    n_ticks = sum(t["samples"] for t in ticks)
    out = {
        "variant": variant, "batch": batch, "positions": positions, "interval_s": interval_s,
        "plain_s": plain, "sampled_s": sampled,
        "overhead": statistics.median(sampled) / statistics.median(plain) - 1,
        "ticks": ticks, "us_per_tick": 1e6 * sum(t["cpu_s"] for t in ticks) / max(1, n_ticks),
        "probe": sample.to_dict() if sample else None,
        "torch_memory_allocated": torch_alloc, "nvidia_smi": smi,
    }
    log.info("sampler: overhead %+.2f%%, %.0f us of sampler CPU per tick", 100 * out["overhead"], out["us_per_tick"])
    return out


def sampler_breakdown(shape_name: str, variant: str, batch: int, positions: int, device, dtype,
                      repeats: int = 5, interval_s: float = 0.05) -> dict[str, Any]:
    """Decode wall time without a sampler and with samplers that read fewer probes, in rotating order.

    Which probe a slowdown comes from: NVML's per-process query walks the driver's process
    list, its memory query goes to the driver, torch's counters take the allocator's lock,
    the KV reading and RSS are Python and /proc.
    """
    import math

    from engine.decoding import WindowDecoder
    from engine.memory import MemorySampler, nvml, probes

    loaded = build(shape_name, variant, device, dtype)
    dec = WindowDecoder(loaded)
    forced_decode(loaded, batch, 16, decoder=dec)
    real_nvml, real_torch, real_proc = probes.nvml_memory, probes.torch_cuda_memory, nvml.PROCESS_REFRESH_S
    configs = ["plain", "full", "no-nvml-process", "no-nvml", "rss+kv", "rss"]

    def setup(name: str) -> None:
        probes.nvml_memory, probes.torch_cuda_memory, nvml.PROCESS_REFRESH_S = real_nvml, real_torch, real_proc
        if name == "no-nvml-process":
            nvml.PROCESS_REFRESH_S = math.inf
        if name in ("no-nvml", "rss+kv", "rss"):
            probes.nvml_memory = lambda device=None: (None, "off")
        if name in ("rss+kv", "rss"):
            probes.torch_cuda_memory = lambda device=None: (None, "off")

    walls: dict[str, list[float]] = {c: [] for c in configs}
    cpu: dict[str, list[float]] = {c: [] for c in configs[1:]}
    try:
        for k in range(repeats):
            order = configs[k % len(configs):] + configs[:k % len(configs)]
            for name in order:
                setup(name)
                if name == "plain":
                    walls[name].append(forced_decode(loaded, batch, positions, decoder=dec).wall_s)
                    continue
                smp = MemorySampler(interval_s=interval_s, kv_source=None if name == "rss" else dec.live_kv_bytes,
                                    device=device)
                with smp:
                    walls[name].append(forced_decode(loaded, batch, positions, decoder=dec).wall_s)
                cpu[name].append(1e6 * smp.cpu_time_s / max(1, smp.sample_count))
    finally:
        setup("full")
    base = statistics.median(walls["plain"])
    out = {"variant": variant, "batch": batch, "positions": positions, "interval_s": interval_s, "walls": walls,
           "overhead": {c: statistics.median(w) / base - 1 for c, w in walls.items()},
           "us_per_tick": {c: statistics.median(v) for c, v in cpu.items()}}
    log.info("sampler breakdown: overhead %s; us per tick %s",
             {c: f"{100 * v:+.1f}%" for c, v in out["overhead"].items()},
             {c: round(v) for c, v in out["us_per_tick"].items()})
    return out


# -- 6. where a decode step's time goes -------------------------------------------------------------
SDPA_CHOICES: dict[str, list[str] | None] = {
    "default": None,
    "no-cudnn": ["FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH"],
    "math": ["MATH"],
}


def sdpa_context(name: str):
    import contextlib

    backends = SDPA_CHOICES[name]
    if backends is None:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([getattr(SDPBackend, b) for b in backends])


def step_profile(shape_name: str, variants: list[str], device, dtype, out_dir: Path | None) -> dict[str, Any]:
    """Per-step time at batch 1 under each SDPA backend choice; a torch.profiler table per variant."""
    from torch.profiler import ProfilerActivity, profile

    result: dict[str, Any] = {"step_ms": {}}
    tables = []
    for variant in variants:
        loaded = build(shape_name, variant, device, dtype)
        forced_decode(loaded, 1, 16)
        for name in SDPA_CHOICES:
            with sdpa_context(name):
                forced_decode(loaded, 1, 8)
                ms = forced_decode(loaded, 1, 64).to_dict()["step_ms"]
            result["step_ms"][f"{variant}/{name}"] = ms
            log.info("step %s %s b=1: %.2f ms", variant, name, ms)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            forced_decode(loaded, 1, 16)
        avg = prof.key_averages()
        tables.append(f"## {shape_name} {variant} b=1, 14 steps, by CUDA time\n"
                      + avg.table(sort_by="self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total",
                                  row_limit=15)
                      + f"\n## {shape_name} {variant} by CPU time\n" + avg.table(sort_by="self_cpu_time_total", row_limit=15))
        del loaded
        free()
    if out_dir is not None:
        (out_dir / "profile.txt").write_text("\n\n".join(tables))
    return result


# -- 5. OOM fallback on a real CUDA OOM -------------------------------------------------------------------
def oom_fallback_check(shape_name: str, device, dtype, windows: int = 24, positions: int = 64) -> dict[str, Any]:
    from engine.memory.oom import FallbackState, run_with_oom_fallback

    if device.type != "cuda":
        return {"skipped": "needs a CUDA device"}
    loaded = build(shape_name, "stock", device, dtype)
    free()
    forced_decode(loaded, 3, positions)
    budget = torch.cuda.max_memory_reserved(device) + (64 << 20)  # batch 3 fits, 24 cannot
    seen: list[int] = []

    def decode(idx: list[int]) -> list[int]:
        run = forced_decode(loaded, len(idx), positions)
        return [run.batch] * len(idx)

    state = FallbackState(windows)
    with memory_limit(device, budget):
        for idx, _ in run_with_oom_fallback(decode, list(range(windows)), windows, state=state):
            seen.extend(idx)
    return {"windows": windows, "budget_bytes": budget, "oom_events": state.oom_events,
            "final_batch": state.batch_size, "each_once_in_order": seen == list(range(windows))}


def confirm_plan(shape_name: str, variant: str, budget: int, positions: int, device, dtype) -> dict[str, Any]:
    """Run the batch the product's `plan_batch` picks for the budget, under that budget."""
    loaded = build(shape_name, variant, device, dtype)
    planned = plan_for(loaded, budget)
    free()
    with memory_limit(device, budget):
        run = try_decode(loaded, planned["batch"], positions)
    log.info("plan %s %s: batch %d %s", shape_name, variant, planned["batch"],
             f"fits, peak {mib(run.peak_allocated)} MiB, {run.to_dict()['windows_per_s']:.2f} win/s" if run
             else "OOM")
    return {"plan_batch": planned, "fits": run is not None, "run": run.to_dict() if run else None}


def probe_costs(shape_name: str, device, dtype, calls: int = 200) -> dict[str, float]:
    """Microseconds per call of each thing a sampler tick reads, with a full-length cache live."""
    from engine.decoding import WindowDecoder
    from engine.kv_cache import cache_bytes
    from engine.memory.probes import nvml_memory, rss_bytes, torch_cuda_memory

    loaded = build(shape_name, "stock", device, dtype)
    dec = WindowDecoder(loaded)
    kept = {}
    forced_decode(loaded, 2, 448, decoder=dec, on_step=lambda t: kept.update(cache=dec.live_cache))
    cache = kept["cache"]
    fns = {"rss (psutil)": rss_bytes, "kv cache_bytes (all layers)":
           lambda: cache_bytes(cache)}
    if device.type == "cuda":
        fns.update({"torch.cuda.memory_stats": lambda: torch.cuda.memory_stats(device),
                    "torch_cuda_memory probe": lambda: torch_cuda_memory(device),
                    "nvml probe": lambda: nvml_memory(device)})
    if device.type == "cuda":
        import pynvml

        from engine.memory import nvml

        if nvml.init_reason() is None:
            handle, _ = nvml._handle(cuda_index(device), torch)
            fns["nvml memory info (uncached)"] = lambda: nvml._memory_info(pynvml, handle)
            fns["nvml process usage (uncached)"] = lambda: nvml._read_process_usage(handle)
    if device.type == "cuda" and hasattr(torch._C, "_cuda_memoryStats"):
        fns["torch._C._cuda_memoryStats"] = lambda: torch._C._cuda_memoryStats(cuda_index(device))
    out = {}
    for name, fn in fns.items():
        fn()
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        out[name] = 1e6 * (time.perf_counter() - t) / calls
    log.info("probe costs (us per call): %s", {k: round(v, 1) for k, v in out.items()})
    return out


# -- report ---------------------------------------------------------------------------------------------
def env_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu=p.name, gpu_total_bytes=p.total_memory, cuda=torch.version.cuda)
    return info


def mib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.0f}"


def print_tables(report: dict[str, Any]) -> None:
    print(f"\n# {report['env'].get('gpu', 'cpu')}, torch {report['env']['torch']}, {report['dtype']}, "
          f"{report['positions']} positions per row (forced), random weights")
    if report.get("exactness"):
        print("\nexactness (relative error of logits over every decoded step):")
        for r in report["exactness"]:
            val = f"{r['rel_err']:.2e}" if r["rel_err"] is not None else f"{100 * r['agreement']:.1f}% same argmax"
            print(f"  {r['dtype']:9} {r['check']:36} {val}")
    for shape, sw in report.get("sweep", {}).items():
        print(f"\n{shape}: batch sweep (peak allocated MiB / KV MiB self+cross / tokens per s / windows per s)")
        print(f"  {'variant':11} {'weights':>8} " + " ".join(f"{'b=' + str(r['batch']):>28}" for r in
                                                            next(iter(sw.values()))["runs"]))
        for variant, v in sw.items():
            cells = []
            for r in v["runs"]:
                if r.get("oom"):
                    cells.append(f"{'OOM':>28}")
                else:
                    cells.append(f"{mib(r['peak_allocated']):>7} {mib(r['kv_self'] + r['kv_cross']):>6} "
                                 f"{r['tokens_per_s']:>7.0f} {r['windows_per_s']:>5.2f}")
            print(f"  {variant:11} {mib(v['weights_bytes']):>8} " + " ".join(cells))
    for shape, mb in report.get("budget", {}).items():
        print(f"\n{shape}: largest batch under {mib(report['budget_bytes'])} MiB (real OOM past it)")
        base = mb.get("stock", {})
        for variant, r in mb.items():
            if "error" in r:
                print(f"  {variant:11} {r['error']}")
                continue
            run = r.get("run") or {}
            ratio = ""
            if base.get("max_fit") and r.get("max_fit") and variant != "stock":
                ratio = (f"  {r['max_fit'] / base['max_fit']:.1f}x batch, "
                         f"{run.get('windows_per_s', 0) / (base.get('run') or {}).get('windows_per_s', 1):.1f}x "
                         "windows/s vs stock")
            print(f"  {variant:11} max {r['max_fit']} (first OOM {r['smallest_oom']}, predicted {r['predicted']}, "
                  f"plan_batch {r['plan_batch']['batch']})  {run.get('windows_per_s', 0):.2f} win/s{ratio}")
    if report.get("step_profile"):
        print(f"\nbatch-1 decode step, ms (SDPA backends): {report['step_profile']['step_ms']}; "
              f"used from then on: {report['sdpa_backends_used']}")
    if report.get("sampler"):
        s = report["sampler"]
        print(f"\nsampler at 20 Hz: overhead {100 * s['overhead']:+.2f}% (median of {len(s['plain_s'])}, "
              f"{s['us_per_tick']:.0f} us CPU per tick); "
              f"probe torch allocated {mib((s['probe'] or {}).get('torch_allocated_bytes'))} MiB vs "
              f"torch.cuda.memory_allocated {mib(s['torch_memory_allocated'])} MiB; NVML used "
              f"{mib((s['probe'] or {}).get('device_used_bytes'))} MiB vs nvidia-smi {s['nvidia_smi']}")
    if report.get("oom_fallback"):
        print(f"\nOOM fallback: {report['oom_fallback']}")
    if report.get("other_dtype"):
        od = report["other_dtype"]
        for variant, v in od["sweep"].items():
            for r in v["runs"]:
                if not r.get("oom"):
                    print(f"{od['dtype']} {od['shape']} {variant} b={r['batch']}: {r['tokens_per_s']:.0f} tok/s, "
                          f"peak {mib(r['peak_allocated'])} MiB")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="float16", choices=sorted(DTYPES))
    p.add_argument("--shapes", default="large-v3,small")
    p.add_argument("--variants", default="stock,xc,mla75,mla87.5+xc")
    p.add_argument("--batches", default="1,4,16,64")
    p.add_argument("--positions", type=int, default=448, help="decoder positions per row at the end (<= 448)")
    p.add_argument("--budget", default="8GiB", help="memory budget for the largest-batch search")
    p.add_argument("--exactness-dtypes", default="float32,float16,bfloat16")
    p.add_argument("--time-limit", type=float, default=420.0, help="seconds; later sections are skipped past it")
    p.add_argument("--reuse", default=None, help="a previous report: take its exactness and sweeps, run the rest")
    p.add_argument("--profile", action="store_true", help="time a batch-1 step per SDPA backend, torch.profiler tables")
    p.add_argument("--sdpa", default="default", choices=sorted(SDPA_CHOICES), help="SDPA backends for the whole run")
    p.add_argument("--final", action="store_true", help="only: the product's planned batches under the budget, "
                   "OOM fallback, probe costs, sampler at 10 and 20 Hz")
    p.add_argument("--budget-tries", type=int, default=3, help="real runs per variant in the largest-batch search")
    p.add_argument("--fixed-segments", action="store_true", help="keep the CUDA allocator's default segments "
                   "(the product asks for expandable ones; runs before 2026-11-26 11:30 used the default)")
    p.add_argument("--skip", default="", help="comma-separated sections to leave out: budget, oom, sampler, "
                   "breakdown, other-dtype")
    p.add_argument("--quick", action="store_true", help="tiny shape, short decodes: a dry run of every code path")
    p.add_argument("--out", default=None, help="JSON report (written after every section)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stdout)
    from engine.batching import parse_size

    if args.quick:
        args.shapes, args.batches, args.positions = "tiny", "1,2,4", 24
    device = torch.device(args.device)
    if device.type == "cuda" and not args.fixed_segments:
        from engine.cuda_allocator import prefer_expandable_segments

        log.info("allocator: %s", prefer_expandable_segments())  # as the product's model loader does
    dtype = DTYPES[args.dtype] if device.type == "cuda" else torch.float32
    deadline = time.monotonic() + args.time_limit
    budget = parse_size(args.budget)
    shapes = [s for s in args.shapes.split(",") if s]
    variants = [v for v in args.variants.split(",") if v]
    skip = {x for x in args.skip.split(",") if x}
    batches = [int(b) for b in args.batches.split(",")]
    report: dict[str, Any] = {"env": env_info(device), "dtype": str(dtype).replace("torch.", ""),
                              "positions": args.positions, "budget_bytes": budget, "sweep": {}, "budget": {}}
    out = Path(args.out) if args.out else None

    def save() -> None:
        if out:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(report, indent=1))

    def section(name: str, fn) -> Any:
        if time.monotonic() > deadline:
            log.warning("deadline reached: skipping %s", name)
            return None
        t = time.monotonic()
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - one failed section must not lose the others
            log.exception("%s failed", name)
            report.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}"
            return None
        finally:
            free()  # the section's models are unreachable now that its frame is gone
            log.info("%s took %.1f s", name, time.monotonic() - t)
            save()

    backends = contextlib.ExitStack()
    backends.enter_context(sdpa_context(args.sdpa))
    report["sdpa_backends_used"] = args.sdpa
    if args.final:
        shape = shapes[0]
        report["plan_confirmed"] = {}
        for variant in variants:
            r = section(f"plan {variant}", lambda: confirm_plan(shape, variant, budget, args.positions, device, dtype))
            if r:
                report["plan_confirmed"][variant] = r
        if "oom" not in skip:
            report["oom_fallback"] = section("oom fallback", lambda: oom_fallback_check("small", device, dtype))
        report["probe_costs"] = section("probe costs", lambda: probe_costs(shape, device, dtype))
        if "breakdown" not in skip:
            report["sampler_breakdown"] = section("sampler breakdown", lambda: sampler_breakdown(
                shape, "mla75", 8, 128, device, dtype))
        for hz, interval in ((("10hz", 0.1), ("20hz", 0.05)) if "sampler" not in skip else ()):
            report[f"sampler_{hz}"] = section(f"sampler {hz}", lambda: sampler_check(
                shape, "mla75", 8, 128, device, dtype, repeats=3, interval_s=interval))
        backends.close()
        save()
        print(json.dumps({k: report.get(k) for k in ("plan_confirmed", "oom_fallback", "probe_costs")}, indent=1,
                         default=str)[:6000])
        for hz in ("10hz", "20hz"):
            sm = report.get(f"sampler_{hz}") or {}
            print(hz, "overhead", sm.get("overhead"), "us/tick", sm.get("us_per_tick"))
        return 0
    exact_shape = "tiny" if args.quick else "small"
    exact_dtypes = [d for d in args.exactness_dtypes.split(",") if d] if device.type == "cuda" else ["float32"]
    reused: dict[str, Any] = json.loads(Path(args.reuse).read_text()) if args.reuse else {}
    if reused:
        report["reused_from"] = {"file": args.reuse, "env": reused.get("env")}
        report["exactness"] = reused.get("exactness")
    else:
        report["exactness"] = section("exactness", lambda: exactness(exact_shape, device, exact_dtypes, 24))
    if args.profile:
        prof = section("step profile", lambda: step_profile(shapes[0], ["stock", "xc", "mla75"], device, dtype,
                                                            out.parent if out else None))
        report["step_profile"] = prof
        if prof:
            ms = prof["step_ms"]
            best = min(SDPA_CHOICES, key=lambda k: ms.get(f"stock/{k}", float("inf")))
            if ms.get(f"stock/{best}", 0) < 0.8 * ms.get("stock/default", 0):
                log.warning("SDPA backend %r is much faster for stock than the default: using it from here on", best)
                report["sdpa_backends_used"] = best
                backends.enter_context(sdpa_context(best))
    for i, shape in enumerate(shapes):
        sw = (reused.get("sweep") or {}).get(shape)
        if sw is None:
            sw = section(f"sweep {shape}", lambda: sweep(shape, variants, batches, args.positions, device, dtype,
                                                         deadline))
        if sw:
            report["sweep"][shape] = sw
        if device.type == "cuda" and sw and "budget" not in skip:
            report["budget"][shape] = {}
            todo = [v for v in variants if v in sw]
            # the headline pair first (stock and the smallest state), then the cheap checks, then the rest
            first = [v for v in todo if v in ("stock", todo[-1])]
            for k, group in enumerate((first, [v for v in todo if v not in first])):
                for variant in group:
                    r = section(f"budget {shape} {variant}", lambda: max_batch(
                        shape, variant, sw[variant]["runs"], budget, args.positions, device, dtype, deadline,
                        tries=args.budget_tries))
                    if r:
                        report["budget"][shape][variant] = r
                if k == 0 and i == 0 and "oom" not in skip:
                    report["oom_fallback"] = section("oom fallback", lambda: oom_fallback_check("small", device,
                                                                                                dtype))
                if k == 0 and i == 0 and "sampler" not in skip:
                    report["sampler"] = section("sampler", lambda: sampler_check(shape, "mla75", 8, 128, device,
                                                                                 dtype))
    if device.type == "cuda" and shapes and "other-dtype" not in skip:  # lowest priority: the other half-precision type's speed
        other = "bfloat16" if dtype == torch.float16 else "float16"
        report["other_dtype"] = section(f"sweep {other}", lambda: {"dtype": other, "shape": shapes[0], "sweep": sweep(
            shapes[0], ["stock", variants[-1]], [16], args.positions, device, DTYPES[other], deadline)})
    backends.close()
    save()
    print_tables(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
