"""The stacked attention network against the tutorial's LSTM on questions that need attention.

On one ``vqa synth --relations`` set (cluttered scenes of 4-6 shapes; binding and position
questions), with the same seed, epochs and batch size for both:

* LSTM: the tutorial's recurrent model on VGG16 fc7 vectors (``vqa features``);
* SAN: the stacked attention network on the VGG16 ``block5_pool`` grid (``vqa features --grid``);
* question only: the best train answer for each question string (the ceiling of a model
  that ignores the image).

Each is scored on val with the official metric, overall and per question kind (binding /
position), after every epoch (``history.json``'s ``val_modal_accuracy`` and the SAN's
``attention_entropy_<l>``) and at the end (``vqa evaluate --model``). Then the SAN's training
throughput through what ``vqa train`` feeds (``data.in_graph_batches``: ``QuestionBatches``'
batches gathered inside TensorFlow), and through the ``QuestionBatches`` PyDataset itself, is
timed against ``model.fit`` on in-memory arrays of the same shapes (median of --repeats,
interleaved; ``--throughput-only`` runs this part alone). VGG16 has random weights: nothing can be downloaded here.

    python bench/bench_attention.py                      # defaults: 1500 images, 12 epochs
    python bench/bench_attention.py --images 600 --epochs 4 --out /tmp/quick.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from bench_train import machine, time_fit  # noqa: E402

HERE = Path(__file__).resolve().parent


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=1500, help="synthetic images (default: 1500)")
    p.add_argument("--epochs", type=int, default=12, help="epochs for both models (default: 12)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size for both models (default: 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=224, help="grid features' image size (default: 224 -> 7 x 7)")
    p.add_argument("--lstm-units", type=int, default=512, help="the LSTM's width (default: 512, the tutorial's)")
    p.add_argument("--san-units", type=int, default=512, help="the SAN's d (default: 512 on this CPU; paper: 1024)")
    p.add_argument("--attention-units", type=int, default=256, help="the SAN's k (default: 256 on this CPU)")
    p.add_argument("--recipe", default="", help="TrainConfig fields for both models, as JSON "
                   "(e.g. '{\"dropout\": 0.0, \"lr_schedule\": \"none\"}')")
    p.add_argument("--san-flags", default="", help="more TrainConfig fields for the SAN, as JSON")
    p.add_argument("--models", nargs="+", choices=["lstm", "san"], default=["lstm", "san"])
    p.add_argument("--repeats", type=int, default=3, help="throughput: median of this many runs")
    p.add_argument("--steps", type=int, default=20, help="throughput: timed batches per run")
    p.add_argument("--throughput-only", action="store_true",
                   help="only time the SAN's input pipeline (on the data in --workdir), updating --out")
    p.add_argument("--workdir", type=Path, default=HERE / "out" / "attention")
    p.add_argument("--out", type=Path, default=HERE / "results_attention.json")
    return p.parse_args(argv)


def make_data(workdir: Path, args) -> dict[str, Path]:
    """vqa synth --relations, vqa prepare, and both kinds of features (random VGG16)."""
    from vqa.features import extract_image_features
    from vqa.prepare import prepare_dataset
    from vqa.synthetic import generate_dataset

    paths = {"raw": workdir / "data", "prepared": workdir / "preprocessed",
             "fc7": workdir / "features_fc7.h5", "grid": workdir / f"features_grid{args.image_size}.h5"}
    stamp = workdir / "inputs.json"
    key = {"images": args.images, "seed": args.seed, "image_size": args.image_size}
    if stamp.is_file() and json.loads(stamp.read_text()) == key:
        return paths
    generate_dataset(paths["raw"], num_images=args.images, seed=args.seed, relations=True)
    prepare_dataset(data_dir=paths["raw"], out_dir=paths["prepared"], num_answers=1000, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random VGG16 weights, expected here
        extract_image_features(paths["raw"] / "images", paths["fc7"], cnn_weights="random")
        extract_image_features(paths["raw"] / "images", paths["grid"], cnn_weights="random", layout="grid",
                               image_size=args.image_size)
    stamp.write_text(json.dumps(key))
    return paths


def kinds_of(prepared: Path, report: dict) -> dict[str, float]:
    """Official accuracy per question kind from the report's per-question-type block."""
    from vqa.data import load_prepared_split

    val = load_prepared_split(prepared, "val")
    per_question = report["perQuestion"]
    scores: dict[str, list[float]] = {}
    for question_id, question_type in zip(val.question_ids.tolist(), val.question_types):
        value = per_question.get(str(question_id), per_question.get(question_id))
        if value is not None:
            scores.setdefault(question_type.split(":")[0], []).append(float(value))
    return {kind: round(float(np.mean(values)), 2) for kind, values in sorted(scores.items())}


def train_one(kind: str, paths: dict[str, Path], workdir: Path, args) -> dict:
    """Train ``kind`` for --epochs, evaluate it on val; history and official figures."""
    from vqa.evaluate import evaluate_model
    from vqa.train import TrainConfig, train_model

    sizes = ({"lstm_units": args.lstm_units} if kind == "lstm" else
             {"lstm_units": args.san_units, "attention_units": args.attention_units,
              **json.loads(args.san_flags or "{}")})
    sizes = {**json.loads(args.recipe or "{}"), **sizes}
    config = TrainConfig.tutorial(kind, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                                  verbose=2, **sizes)
    features = paths["grid" if kind == "san" else "fc7"]
    model_dir = workdir / "models" / kind
    start = time.perf_counter()
    history = train_model(config, data_dir=paths["prepared"], features_path=features, out_dir=model_dir,
                          logdir=workdir / "Graph" / kind, overwrite=True)
    seconds = time.perf_counter() - start
    report = evaluate_model(model_dir, data_dir=paths["prepared"], features_path=features, split="val",
                            results_path=workdir / "results" / kind / "results.json")
    keep = ("val_modal_accuracy", "accuracy", "loss", "val_loss", "attention_entropy_1", "attention_entropy_2")
    return {"config": {k: v for k, v in sizes.items()}, "train_seconds": round(seconds, 1),
            "overall": report["overall"], "per_kind": kinds_of(paths["prepared"], report),
            "perAnswerType": report["perAnswerType"],
            "history": {k: [round(float(v), 4) for v in history[k]] for k in keep if k in history}}


def question_only(paths: dict[str, Path]) -> dict:
    from vqa.demo import question_only_report

    report = question_only_report(paths["prepared"])
    return {"overall": report["overall"], "per_kind": kinds_of(paths["prepared"], report)}


def san_throughput(paths: dict[str, Path], args) -> dict:
    """SAN samples/s: QuestionBatches over the memory-mapped grid file vs in-memory arrays."""
    import keras

    from vqa import artifacts
    from vqa.data import QuestionBatches, feature_rows, image_statistics, in_graph_batches, load_features, load_prepared
    from vqa.train import TrainConfig, build_model

    config = TrainConfig.tutorial("san", batch_size=args.batch_size, seed=args.seed, lstm_units=args.san_units,
                                  attention_units=args.attention_units,
                                  **{**json.loads(args.recipe or "{}"), **json.loads(args.san_flags or "{}")})
    prepared = load_prepared(paths["prepared"], splits=(artifacts.TRAIN_SPLIT,))
    split = prepared.splits[artifacts.TRAIN_SPLIT]
    split = split.select(split.labels >= 0)
    features, image_ids = load_features(paths["grid"], layout=artifacts.LAYOUT_GRID)
    rows = feature_rows(split.image_ids, image_ids)
    _, trainer = build_model(config, embeddings=prepared.embeddings, num_answers=len(prepared.answers),
                             image_shape=features.shape[1:], image_statistics=image_statistics(features, rows))
    dataset = QuestionBatches(split, features, rows, batch_size=config.batch_size, bucket=config.bucket, seed=0)
    # What `vqa train` feeds on one device: the same batches gathered inside TensorFlow when the features fit.
    in_graph = in_graph_batches(QuestionBatches(split, features, rows, batch_size=config.batch_size,
                                                bucket=config.bucket, seed=0))
    warmup = 3
    steps = min(args.steps, len(dataset) - warmup)
    timed = dataset.batches[warmup:warmup + steps]
    width = int(round(np.mean([split.lengths[b].max() for b in timed])))
    n = (warmup + steps) * config.batch_size
    rng = np.random.default_rng(0)
    take = rng.integers(0, len(split.token_ids), n)
    ceiling_x = {"question": split.token_ids[take, :width].copy(),
                 "image_features": rng.random((n, *features.shape[1:]), dtype=np.float32)}
    runs = {"pipeline": [], "pydataset": [], "ceiling": []}
    for _ in range(args.repeats):  # interleaved: each repeat times the three feeds one after another
        if in_graph is not None:
            runs["pipeline"].append(time_fit(trainer, in_graph, steps=steps, warmup=warmup,
                                             batch_size=config.batch_size))
        runs["pydataset" if in_graph is not None else "pipeline"].append(
            time_fit(trainer, dataset, steps=steps, warmup=warmup, batch_size=config.batch_size))
        runs["ceiling"].append(time_fit(trainer, ceiling_x, y=split.labels[take], steps=steps, warmup=warmup,
                                        batch_size=config.batch_size))
    result = {name + "_samples_per_s": round(statistics.median(values), 1) for name, values in runs.items() if values}
    result["pipeline_vs_ceiling"] = round(result["pipeline_samples_per_s"] / result["ceiling_samples_per_s"], 3)
    if runs["pydataset"]:
        result["pydataset_vs_ceiling"] = round(result["pydataset_samples_per_s"] / result["ceiling_samples_per_s"], 3)
    result.update(timed_steps=steps, ceiling_width=width, runs={k: [round(v, 1) for v in vs] for k, vs in runs.items()})
    keras.backend.clear_session()
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    workdir = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    paths = make_data(workdir, args)
    if args.throughput_only:
        results = json.loads(args.out.read_text()) if args.out.is_file() else {}
        results["san_throughput"] = {**san_throughput(paths, args), "machine": machine()}
        print("SAN throughput:", results["san_throughput"], flush=True)
        args.out.write_text(json.dumps(results, indent=1))
        return 0
    results = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()},
               "question_only": question_only(paths)}
    print("question only:", results["question_only"], flush=True)
    for kind in args.models:
        results[kind] = train_one(kind, paths, workdir, args)
        print(kind, {k: results[kind][k] for k in ("overall", "per_kind", "train_seconds")}, flush=True)
    if "san" in args.models and args.repeats > 0:
        results["san_throughput"] = san_throughput(paths, args)
        print("SAN throughput:", results["san_throughput"], flush=True)
    results["machine"]["load_average_end"] = os.getloadavg()
    args.out.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
