"""GPU training throughput of the tutorial's MLP and LSTM, with and without mixed precision.

Run through ``bench/bench_gpu.sh`` (it picks ``KERAS_BACKEND=jax`` and installs carried wheels).
Each network is built by ``vqa.train.build_model`` at the tutorial's sizes (1024 hidden units,
3 x LSTM(512), K = 1000 answers, a 14,000-word vocabulary, 4096-d image features) and fed by
``vqa.data.QuestionBatches`` (token ids + feature rows gathered per batch, LSTM batches bucketed
by length) from in-memory features, exactly as ``vqa train`` feeds it. ``model.fit`` runs
1 + --repeats epochs over the same --steps batches: the first compiles every bucket width
and is not timed; samples/s is the median of the others. The projected epoch time on VQA v2
train is --epoch-questions / samples/s. ``--out`` writes bench.harness's record (command,
date, commit, machine with its GPUs, figures).

    bash bench/bench_gpu.sh                  # full sizes (a GPU)
    bash bench/bench_gpu.sh --quick          # tiny sizes: proves the script on a CPU (a few minutes)

The projections above time a few hundred steps on in-memory random data. ``--real-epochs WORKDIR``
measures instead (with TensorFlow or JAX installed beside the project): it generates
``bench/bench_scale.py``'s VQA-v2-sized files in WORKDIR (once), runs the real ``vqa features
--karpathy`` and ``vqa prepare``, then one whole ``vqa train mlp`` and ``vqa train lstm`` epoch
through the project's input pipeline, validation included (the history's ``train_seconds`` and
``val_seconds``), and ``--grid-images N`` times ``vqa features --images --grid`` on N generated
640 x 480 JPEGs; the results go beside the projections in --out:

    python -m bench.bench_gpu --real-epochs bench/out/scale --grid-images 512 --out bench/results_gpu_epochs.json
    python -m bench.bench_gpu --real-epochs /tmp/tiny --scale 0.002 --grid-images 4 --skip-projections \
        --out /tmp/gpu.json   # proves it on a CPU
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from bench import harness

FULL = dict(vocabulary_size=14000, num_answers=1000, image_dim=4096, images=20000, hidden_units=1024,
            lstm_units=512, steps={"mlp": 200, "lstm": 60})
QUICK = dict(vocabulary_size=300, num_answers=20, image_dim=64, images=100, hidden_units=32, lstm_units=16,
             steps={"mlp": 4, "lstm": 3})


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, to check the script (not a measurement)")
    p.add_argument("--models", nargs="+", choices=["mlp", "lstm"], default=["mlp", "lstm"])
    p.add_argument("--precisions", nargs="+", choices=["float32", "mixed"], default=["float32", "mixed"])
    p.add_argument("--repeats", type=int, default=3, help="timed epochs; the median is reported (default: 3)")
    p.add_argument("--epoch-questions", type=int, default=400_000,
                   help="VQA v2 train questions after the top-1000 filter (default: 400000)")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--real-epochs", type=Path, default=None, metavar="WORKDIR",
                   help="time one real vqa train mlp / lstm epoch (validation included) on bench_scale's files here")
    p.add_argument("--scale", type=float, default=1.0, help="--real-epochs data size, a fraction of VQA v2 (default: 1)")
    p.add_argument("--skip-projections", action="store_true", help="only the --real-epochs / --grid-images parts")
    p.add_argument("--grid-images", type=int, default=0, metavar="N",
                   help="also time vqa features --images --grid on N generated JPEGs (default: 0, skip)")
    return p.parse_args(argv)


def real_epochs(work: Path, scale: float) -> dict:
    """One whole epoch of each model through ``vqa train`` (subprocesses), validation included."""
    from bench import bench_prepare, bench_scale

    (work / "logs").mkdir(parents=True, exist_ok=True)
    bench_prepare.generate(work / "data", scale)
    bench_scale.write_karpathy(work / "data" / "coco", bench_scale.generated_image_ids(work / "data"))
    commands = bench_scale.commands(work, lstm_steps=1)
    lstm = commands["train-lstm"]
    at = lstm.index("--steps-per-epoch")
    commands["train-lstm"] = lstm[:at] + lstm[at + 2:]  # the whole epoch
    results = {}
    for name in ("features", "prepare", "train-mlp", "train-lstm"):
        record = bench_scale.run_stage(name, commands[name], work / "logs" / f"{name}.log")
        if name.startswith("train-"):
            record.update(bench_scale.epoch_timing(work / "models" / name.removeprefix("train-")))
        results[name] = record
        print(name, record, flush=True)
    return results


def grid_features(work: Path, count: int) -> dict:
    """images/s of ``vqa features --images --grid`` (448 x 448, random weights) on ``count`` JPEGs."""
    from bench import bench_grid_features, bench_scale

    images = bench_grid_features.make_images(work / "grid_images", count)
    command = [sys.executable, "-m", "vqa", "features", "--images", str(images), "--grid", "--cnn-weights",
               "random", "--out", str(work / "grid.h5")]
    record = bench_scale.run_stage("grid-features", command, work / "grid-features.log")
    return {**record, "images": count, "images_per_second": round(count / record["seconds"], 2),
            "note": "wall time of the whole command: VGG16's build and weights included"}


def make_batches(model: str, sizes: dict, rng: np.random.Generator):
    """QuestionBatches over random data with VQA v2's question lengths (mean ~6 words)."""
    from vqa.data import QuestionBatches
    from vqa.prepared import Split
    from vqa.config import TrainConfig

    batch_size = TrainConfig.for_model(model).batch_size if sizes is FULL else 16
    n = batch_size * sizes["steps"][model]
    lengths = np.clip(rng.poisson(5.2, n) + 1, 2, 22).astype(np.int32)
    tokens = rng.integers(1, sizes["vocabulary_size"], (n, 30)).astype(np.int32)
    tokens[np.arange(30)[None, :] >= lengths[:, None]] = 0
    labels = rng.integers(0, sizes["num_answers"], n).astype(np.int32)
    split = Split("train2014", tokens, lengths, np.zeros(n, np.int64), np.arange(n), labels)
    # Sparse non-negative rows, like ReLU fc7 features.
    features = np.maximum(rng.normal(size=(sizes["images"], sizes["image_dim"])), 0).astype(np.float32)
    rows = rng.integers(0, sizes["images"], n)
    return QuestionBatches(split, features, rows, batch_size=batch_size, shuffle=True,
                           bucket=TrainConfig.for_model(model).bucket, seed=0)


class EpochTimer:
    """Wall time of every epoch (a Keras callback built lazily so that keras loads after the backend is set)."""

    def __new__(cls):
        import keras

        class _Timer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.seconds = []

            def on_epoch_begin(self, epoch, logs=None):
                self.start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.seconds.append(time.perf_counter() - self.start)

        return _Timer()


def measure(model_kind: str, precision: str, sizes: dict, repeats: int) -> dict:
    """samples/s of ``model.fit`` for one network and precision."""
    import keras

    from vqa.train import TrainConfig, build_model

    rng = np.random.default_rng(0)
    batches = make_batches(model_kind, sizes, rng)
    config = TrainConfig.for_model(model_kind, hidden_units=sizes["hidden_units"], lstm_units=sizes["lstm_units"],
                                  standardize_image=False, mixed_precision=precision == "mixed")
    embeddings = rng.normal(size=(sizes["vocabulary_size"], 300)).astype(np.float32)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16" if precision == "mixed" else "float32")
    try:
        _, model = build_model(config, embeddings=embeddings, num_answers=sizes["num_answers"],
                               image_shape=sizes["image_dim"])
    finally:
        keras.config.set_dtype_policy(previous)
    timer = EpochTimer()
    model.fit(batches, epochs=1 + repeats, callbacks=[timer], verbose=0)
    samples = sum(len(rows) for rows in batches.batches)
    per_second = [samples / s for s in timer.seconds[1:]]
    return {"model": model_kind, "precision": precision, "batch_size": batches.batch_size,
            "samples_per_epoch": samples, "compile_epoch_s": round(timer.seconds[0], 2),
            "samples_per_s": round(statistics.median(per_second), 1), "runs": [round(x, 1) for x in per_second]}


def describe_device() -> str:
    import keras

    if keras.backend.backend() == "jax":
        import jax

        device = jax.devices()[0]
        return f"{device.platform}: {getattr(device, 'device_kind', device)} (jax {jax.__version__})"
    return f"{keras.backend.backend()} on {harness.cpu_model()}"


def main(argv=None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    import keras

    results = {"device": describe_device(), "keras": keras.__version__, "backend": keras.backend.backend(),
               "quick": args.quick, "epoch_questions": args.epoch_questions, "runs": []}
    print(f"device: {results['device']}; keras {keras.__version__}; sizes: {'quick' if args.quick else 'tutorial'}")
    print(f"{'model':6} {'precision':9} {'batch':>5} {'samples/s':>11} {'VQA v2 epoch':>13} {'compile':>8}")
    for model_kind in [] if args.skip_projections else args.models:
        for precision in args.precisions:
            row = measure(model_kind, precision, sizes, args.repeats)
            row["projected_epoch_s"] = round(args.epoch_questions / row["samples_per_s"], 1)
            results["runs"].append(row)
            print(f"{model_kind:6} {precision:9} {row['batch_size']:>5} {row['samples_per_s']:>11,.0f} "
                  f"{row['projected_epoch_s']:>12,.1f}s {row['compile_epoch_s']:>7.1f}s", flush=True)
    if args.real_epochs is not None:
        results["real_epochs"] = {"workdir": str(args.real_epochs), "scale": args.scale,
                                  **real_epochs(args.real_epochs, args.scale)}
    if args.grid_images:
        results["grid_features"] = grid_features(args.real_epochs or Path("bench/out/gpu"), args.grid_images)
    if args.out is not None:
        harness.write_results(args.out, results)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
