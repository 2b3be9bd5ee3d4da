"""The stacked attention network against the tutorial's LSTM on questions that need attention.

    python -m bench.bench_attention [--images 1500] [--epochs 12] [--width 1] [--out bench/results_attention.json]
    python -m bench.bench_attention --quick --out /tmp/attention.json   # 40 scenes, 1 epoch, narrow models

On a generated ``--relations`` set (cluttered scenes of 4-6 shapes; binding and position
questions), with the same seed and epochs for both, each model on its own default recipe
(``vqa train lstm`` / ``vqa train san``), its widths times ``--width``:

* LSTM: the tutorial's recurrent model on VGG16 fc7 vectors (``vqa features``);
* SAN: the stacked attention network on the VGG16 ``block5_pool`` grid (``vqa features --grid``);
* question only: the best train answer for each question string (the ceiling of a model
  that ignores the image).

Each is scored on val with the official metric, overall and per question kind, after every
epoch (history: ``val_modal_accuracy``, the SAN's ``attention_entropy_<l>``) and at the end.
VGG16 has random weights: nothing can be downloaded here. The SAN's training throughput is
bench_train's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from bench import harness

HERE = Path(__file__).resolve().parent


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=1500, help="generated scenes (default: 1500)")
    p.add_argument("--epochs", type=int, default=12, help="epochs for both models (default: 12)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=224, help="grid features' image size (default: 224 -> 7 x 7)")
    p.add_argument("--width", type=float, default=1.0,
                   help="every default width times this, for both models alike (LSTM 512 / hidden 1024, "
                   "SAN d 1024 / k 512; default: 1)")
    p.add_argument("--quick", action="store_true", help="40 scenes, 1 epoch, widths x 0.05, a 64-pixel grid (2 x 2)")
    p.add_argument("--workdir", type=Path, default=None, help="keep the data and models here (default: temporary)")
    p.add_argument("--out", type=Path, default=HERE / "results_attention.json")
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.epochs, args.width, args.image_size = 40, 1, 0.05, 64
    return args


def kinds_of(prepared: Path, report: dict) -> dict[str, float]:
    """Official accuracy per question kind from the report's per-question-type block."""
    from vqa.prepared import load_prepared_split

    val = load_prepared_split(prepared, "val")
    per_question = report["perQuestion"]
    scores: dict[str, list[float]] = {}
    for question_id, question_type in zip(val.question_ids.tolist(), val.question_types):
        value = per_question.get(str(question_id), per_question.get(question_id))
        if value is not None:
            scores.setdefault(question_type.split(":")[0], []).append(float(value))
    return {kind: round(float(np.mean(values)), 2) for kind, values in sorted(scores.items())}


def model_sizes(kind: str, width: float) -> dict:
    """TrainConfig width fields for ``kind``: each default times ``width``."""
    if kind == "lstm":
        return {"lstm_units": round(512 * width), "hidden_units": round(1024 * width)}
    return {"lstm_units": round(1024 * width), "attention_units": round(512 * width)}


def recipe_of(config) -> dict:
    """The fields of a TrainConfig that make a model's recipe (what the results file records)."""
    names = ("batch_size", "epochs", "optimizer", "learning_rate", "lr_schedule", "dropout", "lstm_dropout",
             "lstm_units", "lstm_layers", "hidden_units", "hidden_layers", "attention_units", "attention_layers",
             "norm_question", "norm_image", "standardize_image", "standardize_question", "bucket")
    return {name: getattr(config, name) for name in names}


def train_one(kind: str, dataset, workdir: Path, args) -> dict:
    """Train ``kind`` for --epochs on its defaults at --width, evaluate it on val."""
    from vqa.evaluate import evaluate_model
    from vqa.train import TrainConfig, train_model

    sizes = model_sizes(kind, args.width)
    config = TrainConfig.for_model(kind, epochs=args.epochs, seed=args.seed, verbose=2, **sizes)
    features, model_dir = dataset.features_for(kind), workdir / "models" / kind
    start = time.perf_counter()
    history = train_model(config, data_dir=dataset.prepared, features_path=features, out_dir=model_dir,
                          logdir=workdir / "Graph" / kind, overwrite=True)
    seconds = time.perf_counter() - start
    report = evaluate_model(model_dir, data_dir=dataset.prepared, features_path=features, split="val",
                            results_path=workdir / "results" / kind / "results.json")
    keep = ("val_modal_accuracy", "accuracy", "loss", "val_loss", "learning_rate", "attention_entropy_1",
            "attention_entropy_2")
    return {"config": sizes, "recipe": recipe_of(config), "train_seconds": round(seconds, 1),
            "overall": report["overall"], "per_kind": kinds_of(dataset.prepared, report),
            "perAnswerType": report["perAnswerType"],
            "history": {k: [round(float(v), 4) for v in history[k]] for k in keep if k in history}}


def question_only(prepared: Path) -> dict:
    """Official accuracy of the best train answer per question string, overall and per kind."""
    from vqa.demo import question_only_report

    report = question_only_report(prepared)
    return {"overall": report["overall"], "per_kind": kinds_of(prepared, report)}


def question_counts(prepared: Path) -> dict[str, int]:
    """Train and val questions in a prepared folder."""
    from vqa.prepared import load_prepared_split

    return {split: len(load_prepared_split(prepared, split).question_ids) for split in ("train", "val")}


def main(argv=None) -> int:
    from vqa.features import RandomWeightsWarning
    from vqa.sample_dataset import build_sample_dataset

    args = parse_args(argv)
    warnings.simplefilter("ignore", RandomWeightsWarning)  # random VGG16 weights: nothing to download here
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        # --quick: noise for the LSTM's fc7 (no 224-pixel VGG16 pass); the grid at 64 pixels
        kinds = ("random", "grid") if args.quick else ("vector", "grid")
        dataset = build_sample_dataset(workdir / "data", num_images=args.images, seed=args.seed, relations=True,
                                       features=kinds, grid_image_size=args.image_size)
        figures = {"scenes": args.images, "questions": question_counts(dataset.prepared),
                   "question_only": question_only(dataset.prepared)}
        for kind in ("lstm", "san"):
            figures[kind] = train_one(kind, dataset, workdir, args)
            print(kind, {k: figures[kind][k] for k in ("overall", "per_kind", "train_seconds")}, flush=True)
            harness.write_results(args.out, figures)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
