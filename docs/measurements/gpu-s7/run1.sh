#!/bin/bash
# Device-machine run of session 7: bench/bench_gpu.py with cuDNN attention excluded (as the engine does).
# 1. the product's planned batches under 8 GiB for large-v3 (stock vs MLA 87.5% + exact cross), a real CUDA
#    OOM through the fallback, probe costs, sampler overhead at 10 and 20 Hz;
# 2. the whisper-small batch sweep (1..64) of stock, exact cross, MLA 75%, MLA 87.5% + exact cross;
# 3. large-v3 stock re-swept (the first sweep's stock speeds had cuDNN attention on).
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__)"
B="python3 bench/bench_gpu.py --sdpa no-cudnn"
timeout 200 $B --final --shapes large-v3 --variants stock,mla87.5+xc --time-limit 150 --out $OUT/final.json \
  > $OUT/final.log 2>&1; echo "final rc=$?"; grep -E "bench_gpu|overhead|Error|error" $OUT/final.log | cut -c25-260 | tail -25
timeout 130 $B --shapes small --variants stock,xc,mla75,mla87.5+xc --batches 1,4,16,64 --exactness-dtypes "" \
  --skip budget,oom,sampler --time-limit 110 --out $OUT/small.json > $OUT/small.log 2>&1; echo "small rc=$?"
tail -8 $OUT/small.log
timeout 100 $B --shapes large-v3 --variants stock --batches 1,4,16,64 --exactness-dtypes "" \
  --skip budget,oom,sampler,other-dtype --time-limit 90 --out $OUT/large_stock.json > $OUT/large_stock.log 2>&1
echo "large stock rc=$?"; tail -4 $OUT/large_stock.log
