#!/usr/bin/env bash
# LSTM recipes on the real questions, side by side on one GPU (JAX, no TensorFlow needed); optionally
# bench/bench_gpu.sh first, alone. Each variant is one `vqa train lstm` run (20 epochs, seed 0 unless
# its flags say otherwise) whose history.csv is copied to OUTDIR/NAME.csv as it grows.
#
#   bash bench/gpu_lstm_variants.sh OUTDIR DATA BENCH_SECONDS TRAIN_SECONDS [VARIANTS] [-- extra train flags]
#
# DATA: the real-questions folder of bench/bench_real_questions.py (preprocessed/ and features.h5).
# VARIANTS: lines NAME|FLAGS (default: bench/gpu_lstm_variants.txt). BENCH_SECONDS 0 skips bench_gpu,
# TRAIN_SECONDS 0 the variants.
# Keras travels as wheels in .whl/ when the machine lacks it (bench/jax_env.sh, docs/scale.md);
# results: docs/real-questions.md.
set -u
PYTHON=${PYTHON:-python3}
if [ $# -lt 4 ]; then
  echo "usage: bash bench/gpu_lstm_variants.sh OUTDIR DATA BENCH_SECONDS TRAIN_SECONDS [VARIANTS] [-- train flags]" >&2
  exit 2
fi
OUTDIR=$1; DATA=$2; BENCH_S=$3; TRAIN_S=$4; shift 4
VARIANTS=bench/gpu_lstm_variants.txt
if [ $# -gt 0 ] && [ "$1" != "--" ]; then VARIANTS=$1; shift; fi
[ "${1:-}" = "--" ] && shift
EXTRA="$*"
SCRIPT=gpu_lstm_variants.sh
source bench/jax_env.sh
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # several runs share the GPU
mkdir -p "$OUTDIR"
(nvidia-smi -L; "$PYTHON" -c "import jax, keras; print(jax.__version__, keras.__version__, jax.devices())") > "$OUTDIR/gpu.log" 2>&1
if [ "$BENCH_S" -gt 0 ]; then
  timeout "$BENCH_S" env PYTHON="$PYTHON" bash bench/bench_gpu.sh --out "$OUTDIR/gpu.json" ${GPU_FLAGS:-} >> "$OUTDIR/gpu.log" 2>&1
  echo "bench_gpu exit $?" >> "$OUTDIR/gpu.log"
fi
[ "$TRAIN_S" -gt 0 ] || exit 0
work=$(mktemp -d)
declare -A V=()
while IFS='|' read -r name flags; do [ -n "$name" ] && V[$name]="$flags"; done < "$VARIANTS"
for name in "${!V[@]}"; do
  timeout "$TRAIN_S" "$PYTHON" -m vqa train lstm --data "$DATA/preprocessed" --features "$DATA/features.h5" \
    --out "$work/$name" --logdir "$work/Graph/$name" --epochs 20 --seed 0 --verbose 2 ${V[$name]} $EXTRA \
    > "$work/$name.log" 2>&1 &
done
collect() {
  for name in "${!V[@]}"; do
    [ -f "$work/$name/history.csv" ] && cp "$work/$name/history.csv" "$OUTDIR/$name.csv"
  done
  tail -n 3 "$work"/*.log > "$OUTDIR/train.log" 2>&1
}
while [ -n "$(jobs -r)" ]; do sleep 10; collect; done
collect
