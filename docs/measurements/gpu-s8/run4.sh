#!/bin/bash
# Device run 4 of session 8: windows/s after the fix at the batches the 8 GiB comparison uses
# (stock at its largest batch under 8 GiB, 15; MLA 87.5% + exact cross at 64 and 128), 448 positions.
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
export PYTHONUNBUFFERED=1
timeout 150 python3 docs/measurements/gpu-s8/profile_step.py $OUT --variants stock --paths auto --batches 15 \
  --positions 448 --profile none > $OUT/run4_stock.log 2>&1; echo "stock rc=$?"; grep '^{' $OUT/run4_stock.log
timeout 150 python3 docs/measurements/gpu-s8/profile_step.py $OUT --variants mla87.5+xc --paths auto --batches 64,128 \
  --positions 448 --profile none > $OUT/run4_mla.log 2>&1; echo "mla rc=$?"; grep '^{' $OUT/run4_mla.log
