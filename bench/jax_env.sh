# Sourced by the GPU scripts (bench_gpu.sh, gpu_lstm_variants.sh) from the repository root: Keras on
# JAX with no TensorFlow needed. Keras (and the two packages it needs that such a machine may lack)
# can travel as wheels in .whl/; they are installed to a temporary folder when keras is missing.
# Needs $PYTHON and $SCRIPT (for the error line); exports KERAS_BACKEND, PYTHONPATH (src/ first).
export KERAS_BACKEND=${KERAS_BACKEND:-jax}
if ! "$PYTHON" -c "import keras" 2>/dev/null; then
    if ! compgen -G ".whl/*.whl" >/dev/null; then
        echo "$SCRIPT: error: keras is not installed; put its wheels in .whl/ (docs/scale.md)" >&2
        exit 1
    fi
    site=$(mktemp -d)
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl || exit 1
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-3}
