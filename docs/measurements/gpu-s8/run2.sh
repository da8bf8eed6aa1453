#!/bin/bash
# Device run 2 of session 8: large-v3 decode steps after the per-head product fix (engine/mla/heads.py),
# 448 forced positions, batch 1/16/64, stock vs exact cross vs MLA 75% (auto and fused) vs MLA 87.5% + exact cross.
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
timeout 400 python3 docs/measurements/gpu-s8/profile_step.py $OUT --variants stock,xc,mla75,mla87.5+xc \
  --paths auto,fused --batches 1,16,64 --positions 448 --profile none "$@" > $OUT/run2.log 2>&1; echo "rc=$?"
grep '^{' $OUT/run2.log; grep -i "error" $OUT/run2.log | tail -5
