"""Where a large-v3 decode step's GPU time goes at batch 64: stock vs MLA (session 8, device run).

Random-initialised large-v3 shapes, float16, cuDNN attention excluded and expandable
segments (as the engine does), decodes forced to the given positions with the product's
greedy step (bench_gpu.forced_decode). Prints per-step ms for each variant / MLA compute
path and torch.profiler tables (by self CUDA time) of a short decode.

    python docs/measurements/gpu-s8/profile_step.py OUT_DIR [--variants stock,mla75] [--paths auto,fused,naive]
"""
import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
from engine.cuda_allocator import prefer_expandable_segments  # noqa: E402

prefer_expandable_segments()
import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

import bench_gpu as bg  # noqa: E402
from engine.mla.attention import MLAAttention  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--shape", default="large-v3")
ap.add_argument("--variants", default="stock,mla75,mla87.5+xc")
ap.add_argument("--paths", default="auto,fused,factored,naive")
ap.add_argument("--batches", default="1,64")
ap.add_argument("--positions", type=int, default=256)
ap.add_argument("--profile-batch", type=int, default=64)
ap.add_argument("--device", default="cuda", help="cpu: a dry run of the script")
ap.add_argument("--profile", default="auto", help="paths to profile (comma-separated; none: no tables)")
args = ap.parse_args()
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
dev = torch.device(args.device)
activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
results, tables = [], []


def set_path(model, path):
    for m in model.modules():
        if isinstance(m, MLAAttention):
            if path in ("naive", "auto"):
                m.path, m.absorb = ("naive", "auto") if path == "naive" else ("auto", "auto")
            else:
                m.path, m.absorb = "auto", path


with bg.sdpa_context("no-cudnn"):
    for variant in args.variants.split(","):
        loaded = bg.build(args.shape, variant, dev, torch.float16)
        paths = ["auto"] if variant in ("stock", "xc") else args.paths.split(",")
        for path in paths:
            set_path(loaded.model, path)
            bg.forced_decode(loaded, 8, 24)  # warm-up
            for b in [int(x) for x in args.batches.split(",")]:
                run = bg.forced_decode(loaded, b, args.positions).to_dict()
                row = {"variant": variant, "path": path, "batch": b, "step_ms": run["step_ms"],
                       "tok_s": run["tokens_per_s"], "win_s": run["windows_per_s"], "peak_mib": (run["peak_allocated"] or 0) / 2**20}
                results.append(row)
                print(json.dumps(row), flush=True)
            if path in args.profile.split(","):
                bg.forced_decode(loaded, args.profile_batch, 40)
                with profile(activities=activities) as prof:
                    t0 = time.perf_counter()
                    bg.forced_decode(loaded, args.profile_batch, 40)
                    wall = time.perf_counter() - t0
                avg = prof.key_averages()
                tables.append(f"## {args.shape} {variant} path={path} b={args.profile_batch}, 36 steps, wall {wall:.2f} s\n"
                              + avg.table(sort_by="self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total", row_limit=25))
        del loaded
        bg.free()
(out / "steps.json").write_text(json.dumps(results, indent=1))
(out / "profile.txt").write_text("\n\n".join(tables))
print("\n\n".join(tables))
