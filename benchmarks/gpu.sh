#!/usr/bin/env bash
# Accelerator benchmark, one prepared run (< 8 minutes): asset-steps/s for
# 1 ... 10^6 assets, one-step latency, CPU/GPU parity of predictions (float64,
# matmul precision "highest"). Details: benchmarks/gpu_bench.py.
#
#   bash benchmarks/gpu.sh                     # on a GPU machine
#   FNP_GPU_SIZES=1,16 FNP_GPU_STEPS=4 FNP_GPU_PARITY_STEPS=150 bash benchmarks/gpu.sh   # CPU smoke test
#
# Environment: FNP_GPU_SIZES (comma-separated asset counts), FNP_GPU_STEPS,
# FNP_GPU_REPEATS, FNP_GPU_PARITY_STEPS, FNP_GPU_BUDGET_S (soft budget the
# script plans within, default 420), PYTHON (default: python3).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
python="${PYTHON:-python3}"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
# Keep JAX from grabbing 75 % of GPU memory up front: the sizes loop measures
# what the states need.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
"$python" -c "import jax; print('devices:', jax.devices())"
# Hard stop at 7.5 minutes, whatever happens inside.
timeout --signal=INT 450 "$python" "$here/gpu_bench.py"
