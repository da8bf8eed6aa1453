#!/bin/bash
# Device run 3 of session 8 (same warm machine as run 2): the after-fix steps twice more, batch 1 and 64.
OUT=${OUT:-/tmp/out}; export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
for rep in 1 2; do
  timeout 140 python3 docs/measurements/gpu-s8/profile_step.py $OUT/rep$rep --variants stock,mla75,mla87.5+xc \
    --paths auto --batches 1,64 --positions 448 --profile none > $OUT/run3_rep$rep.log 2>&1
  echo "rep $rep rc=$?"; grep '^{' $OUT/run3_rep$rep.log
done
