"""Does `engine.cuda_allocator.prefer_expandable_segments()` really change the CUDA allocator?

Each mode runs in a fresh process: the KV cache's growth pattern (32 layers, one latent row per
step appended with torch.cat, as transformers' DynamicCache does; MLA 87.5% large-v3 latents of
315 windows: 315 x 320 float16 numbers per token and layer, 447 steps), then peak reserved
against peak allocated.

    python docs/measurements/gpu-s7/allocator_check.py
"""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
CHILD = r'''
import json, sys, time
import torch
sys.path.insert(0, sys.argv[1])
mode = sys.argv[2]
from engine.cuda_allocator import prefer_expandable_segments
result = None
if mode == "engine-before-cuda":
    result = prefer_expandable_segments()
torch.zeros(1, device="cuda")
if mode == "engine-after-cuda":
    result = prefer_expandable_segments()
g = getattr(torch._C, "_accelerator_getAllocatorSettings", None)
layers = [torch.empty(315, 0, 320, device="cuda", dtype=torch.float16) for _ in range(32)]
t0 = time.perf_counter()
for step in range(447):
    for i in range(32):
        layers[i] = torch.cat([layers[i], torch.randn(315, 1, 320, device="cuda", dtype=torch.float16)], dim=1)
torch.cuda.synchronize()
print(json.dumps({"mode": mode, "result": result, "settings": g() if g else None,
                  "peak_allocated_mib": torch.cuda.max_memory_allocated() / 2**20,
                  "peak_reserved_mib": torch.cuda.max_memory_reserved() / 2**20,
                  "seconds": round(time.perf_counter() - t0, 2), "torch": torch.__version__}))
'''

env = {k: v for k, v in os.environ.items() if k not in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF")}
rows = []
for mode in ("default", "engine-before-cuda", "engine-after-cuda"):
    out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), mode], capture_output=True, text=True, env=env)
    if out.returncode:
        print(mode, "failed:", out.stderr[-2000:])
        continue
    rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(json.dumps(rows[-1]))
if len(sys.argv) > 1:
    Path(sys.argv[1]).write_text(json.dumps(rows, indent=1))
