#!/bin/bash
# Second device run of session 7, with PyTorch's expandable allocator segments: does the batch that
# plan_batch picks for MLA 87.5% + exact cross under 8 GiB (315 windows, OOM in run 1) fit when the
# growing cache cannot fragment the allocator? Plus the sampler's overhead probe by probe, and
# MLA 87.5% + exact cross at batch 64 and 128 without a cap.
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
export PYTHONUNBUFFERED=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
B="python3 bench/bench_gpu.py --sdpa no-cudnn"
timeout 230 $B --final --shapes large-v3 --variants stock,mla87.5+xc --skip oom,sampler --out $OUT/final_es.json \
  > $OUT/final_es.log 2>&1; echo "final rc=$?"; grep -E "bench_gpu|Error|error" $OUT/final_es.log | cut -c25-600 | tail -20
timeout 80 $B --shapes large-v3 --variants mla87.5+xc --batches 64,128 --exactness-dtypes "" \
  --skip budget,oom,sampler,other-dtype --time-limit 70 --out $OUT/xc_es.json > $OUT/xc_es.log 2>&1
echo "xc rc=$?"; grep -E "b=" $OUT/xc_es.log | cut -c25-300
