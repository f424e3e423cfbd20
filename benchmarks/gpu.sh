#!/usr/bin/env bash
# Throughput on a GPU machine with JAX and no TensorFlow: variants (a) (b) (e) (f) (g) (h) of
# benchmarks/throughput.py at 224x224 and 32x32, float32 and mixed_bfloat16, each variant in its
# own process, 3 interleaved windows of >= 50 steps after warm-up. Sized for under 8 minutes on one
# H100; not yet run on one (no GPU machine was lent when it was written): run it and commit the tables.
# Writes benchmarks/results/throughput_jax_<size>[_mixed_bfloat16].{json,md} (or under $OUT),
# each naming the device.
set -euo pipefail
cd "$(dirname "$0")/.."
export KERAS_BACKEND=jax
OUT=${OUT:-benchmarks/results}
PYTHON=${PYTHON:-python}
for precision in mixed_bfloat16 float32; do
  "$PYTHON" benchmarks/throughput.py --size 224 --batch 128 --precision "$precision" --variants abefgh \
    --steps 50 --seconds 2 --windows 3 --warmup 5 --out "$OUT"
  "$PYTHON" benchmarks/throughput.py --size 32 --batch 256 --precision "$precision" --variants abefgh \
    --steps 50 --seconds 2 --windows 3 --warmup 5 --out "$OUT"
done
