#!/usr/bin/env bash
# GPU numbers for the tutorial's MLP and LSTM (samples/s, float32 and mixed precision, projected
# VQA v2 epoch) on a machine with JAX and no TensorFlow. See docs/scale.md.
#
#   bash bench/bench_gpu.sh [--quick] [--out bench/results_gpu.json] [--models mlp lstm] [--repeats 3]
#
# Keras can travel as wheels in .whl/ at the repository root (bench/jax_env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

SCRIPT=bench_gpu.sh
source bench/jax_env.sh
exec "$PYTHON" -m bench.bench_gpu "$@"
