#!/bin/bash
# Device run 1 of session 8: where a large-v3 decode step's time goes (stock vs MLA, batch 1 and 64).
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__)"
timeout 420 python3 docs/measurements/gpu-s8/profile_step.py $OUT "$@" > $OUT/run1.log 2>&1; echo "rc=$?"
grep '^{' $OUT/run1.log
grep -A30 '^## ' $OUT/run1.log | cut -c1-60,100-200 | head -150
