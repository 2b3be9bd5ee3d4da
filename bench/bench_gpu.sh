#!/usr/bin/env bash
# GPU numbers for the tutorial's MLP and LSTM (samples/s, float32 and mixed precision, projected
# VQA v2 epoch) on a machine with JAX and no TensorFlow. See docs/scale.md.
#
#   bash bench/bench_gpu.sh [--quick] [--out bench/results_gpu.json] [--models mlp lstm] [--repeats 3]
#
# Keras (and the two packages it needs that such a machine may lack) can travel as wheels in
# .whl/ at the repository root; they are installed to a temporary folder when keras is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if ! "$PYTHON" -c "import keras" 2>/dev/null; then
    if ! compgen -G ".whl/*.whl" >/dev/null; then
        echo "bench_gpu.sh: error: keras is not installed; put its wheels in .whl/ (docs/scale.md)" >&2
        exit 1
    fi
    site=$(mktemp -d)
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi

export KERAS_BACKEND=${KERAS_BACKEND:-jax}
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-3}
exec "$PYTHON" bench/bench_gpu.py "$@"
