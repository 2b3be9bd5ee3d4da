"""Attention models against the tutorial's LSTM on questions that need attention, over seeds.

    python -m bench.bench_attention [--images 1500 4500] [--seeds 0 1 2] [--models lstm san topdown]
        [--epochs 10] [--width 0.25] [--workdir DIR] [--out 'bench/results_attention_{images}.json']
    python -m bench.bench_attention --scenes one-shape --images 300 ...   # the demo's one-shape set
    python -m bench.bench_attention --quick --out /tmp/attention.json   # 40 scenes, 1 epoch, narrow models

On a generated set (``--scenes relations``: cluttered scenes of 4-6 shapes, binding and
position questions; ``one-shape``: the demo's scenes of one shape, colour / count / presence /
shape questions), with the same seeds and epochs for all, each model on its own default recipe
(``vqa train MODEL``), its widths times ``--width``:

* LSTM (and MLP): the tutorial's models on VGG16 fc7 vectors (``vqa features``);
* SAN, top-down: the attention models on the VGG16 ``block5_pool`` grid (``vqa features --grid``);
* question only: the best train answer for each question string (the ceiling of a model
  that ignores the image).

One results file per size (``{images}`` in ``--out``): per model, every seed's official val
accuracy overall and per question kind, its training seconds and history, then the mean over
the seeds and the spread (min, max, sample standard deviation), and each model's lead over the
LSTM. ``--workdir`` keeps the data, features and models, and a later run there reuses the data.
VGG16 has random weights: nothing can be downloaded here. Throughput is bench_train's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from bench import harness

HERE = Path(__file__).resolve().parent
MODELS = ("mlp", "lstm", "san", "topdown")
BASELINE = "lstm"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, nargs="+", default=[1500], help="generated scenes, one comparison each")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (the data's seed is 0)")
    p.add_argument("--models", nargs="+", choices=MODELS, default=["lstm", "san", "topdown"])
    p.add_argument("--scenes", choices=("relations", "one-shape"), default="relations")
    p.add_argument("--epochs", type=int, default=12, help="epochs for every model (default: 12)")
    p.add_argument("--image-size", type=int, default=224, help="grid features' image size (default: 224 -> 7 x 7)")
    p.add_argument("--width", type=float, default=1.0,
                   help="every default width times this, for all models alike (default: 1)")
    p.add_argument("--quick", action="store_true", help="40 scenes, 1 epoch, widths x 0.05, a 64-pixel grid (2 x 2)")
    p.add_argument("--workdir", type=Path, default=None, help="keep the data and models here (default: temporary)")
    p.add_argument("--out", default=str(HERE / "results_attention_{images}.json"),
                   help="results file; {images} becomes the size")
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.epochs, args.width, args.image_size = [40], 1, 0.05, 64
    if len(args.images) > 1 and "{images}" not in args.out:
        p.error("--out needs {images} when --images names several sizes")
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
    """TrainConfig width fields of ``kind`` (units of its LSTM, dense, attention layers): each default x ``width``."""
    from vqa.config import TrainConfig, flag_fields

    defaults = TrainConfig.for_model(kind)
    return {f.name: max(1, round(getattr(defaults, f.name) * width)) for f in flag_fields(kind)
            if f.name in ("lstm_units", "hidden_units", "attention_units")}


def recipe_of(config) -> dict:
    """The fields of a TrainConfig that make a model's recipe (what the results file records)."""
    from vqa.config import flag_fields

    skip = {"seed", "steps_per_epoch", "update_freq", "distribute", "mixed_precision", "jit", "verbose"}
    return {f.name: getattr(config, f.name) for f in flag_fields(config.model) if f.name not in skip}


def train_one(kind: str, seed: int, dataset, workdir: Path, args, **overrides) -> dict:
    """Train ``kind`` for --epochs on its defaults at --width (and ``overrides``), evaluate it on val."""
    from vqa.evaluate import evaluate_model
    from vqa.train import TrainConfig, train_model

    config = TrainConfig.for_model(kind, epochs=args.epochs, seed=seed, verbose=2,
                                   **{**model_sizes(kind, args.width), **overrides})
    features, model_dir = dataset.features_for(kind), workdir / "models" / f"{kind}_{seed}"
    start = time.perf_counter()
    history = train_model(config, data_dir=dataset.prepared, features_path=features, out_dir=model_dir,
                          logdir=workdir / "Graph" / f"{kind}_{seed}", overwrite=True)
    seconds = time.perf_counter() - start
    report = evaluate_model(model_dir, data_dir=dataset.prepared, features_path=features, split="val",
                            results_path=workdir / "results" / f"{kind}_{seed}" / "results.json")
    keep = ("val_modal_accuracy", "accuracy", "loss", "val_loss", "learning_rate",
            *(f"attention_entropy_{layer + 1}" for layer in range(config.attention_layers)))
    return {"seed": seed, "recipe": recipe_of(config), "train_seconds": round(seconds, 1),
            "overall": report["overall"], "per_kind": kinds_of(dataset.prepared, report),
            "history": {k: [round(float(v), 4) for v in history[k]] for k in keep if k in history}}


def summary(runs: list[dict]) -> dict:
    """One model over its seeds: the runs, and the mean and spread of each accuracy and of the seconds."""
    def spread(values: list[float]) -> dict:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return {"mean": round(statistics.mean(values), 2), "min": min(values), "max": max(values), "sd": round(sd, 2)}

    kinds = sorted({kind for run in runs for kind in run["per_kind"]})
    return {"recipe": runs[0]["recipe"], "runs": runs, "overall": spread([r["overall"] for r in runs]),
            "per_kind": {k: spread([r["per_kind"][k] for r in runs if k in r["per_kind"]]) for k in kinds},
            "train_seconds": round(statistics.mean(r["train_seconds"] for r in runs), 1)}


def leads(figures: dict, models: list[str]) -> dict:
    """Each model's mean lead over the LSTM (points), overall and per kind; its worst kind."""
    if BASELINE not in figures:
        return {}
    base, result = figures[BASELINE], {}
    for kind in (m for m in models if m != BASELINE and m in figures):
        per_kind = {k: round(v["mean"] - base["per_kind"][k]["mean"], 2)
                    for k, v in figures[kind]["per_kind"].items() if k in base["per_kind"]}
        result[kind] = {"overall": round(figures[kind]["overall"]["mean"] - base["overall"]["mean"], 2),
                        "per_kind": per_kind, "worst_kind": min(per_kind.values(), default=None)}
    return result


def question_only(prepared: Path) -> dict:
    """Official accuracy of the best train answer per question string, overall and per kind."""
    from vqa.demo import question_only_report

    report = question_only_report(prepared)
    return {"overall": report["overall"], "per_kind": kinds_of(prepared, report)}


def question_counts(prepared: Path) -> dict[str, int]:
    """Train and val questions in a prepared folder."""
    from vqa.prepared import load_prepared_split

    return {split: len(load_prepared_split(prepared, split).question_ids) for split in ("train", "val")}


def dataset_for(images: int, workdir: Path, args):
    """The comparison's data under ``workdir``: generated, featurised and prepared once, reused after."""
    from vqa.sample_dataset import GRID, RANDOM, VECTOR, SampleDataset, build_sample_dataset

    folder = workdir / f"{args.scenes}_{images}"
    # --quick: noise for fc7 (no 224-pixel VGG16 pass); the grid at 64 pixels
    kinds = (RANDOM, GRID) if args.quick else (VECTOR, GRID)
    names = {RANDOM: "features_random.h5", VECTOR: "features.h5", GRID: f"features_grid{args.image_size}.h5"}
    paths = {kind: folder / names[kind] for kind in kinds}
    if (folder / "preprocessed" / "vqa_data.h5").is_file() and all(p.is_file() for p in paths.values()):
        return SampleDataset(folder / "data", folder / "preprocessed", paths, {})
    scenes = {"relations": True} if args.scenes == "relations" else {"max_objects": 1}
    return build_sample_dataset(folder, num_images=images, seed=0, features=kinds, grid_image_size=args.image_size,
                                **scenes)


def main(argv=None) -> int:
    from vqa.features import RandomWeightsWarning

    args = parse_args(argv)
    warnings.simplefilter("ignore", RandomWeightsWarning)  # random VGG16 weights: nothing to download here
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        for images in args.images:
            dataset, out = dataset_for(images, workdir, args), Path(args.out.format(images=images))
            figures = {"scenes": images, "scene_kind": args.scenes, "seeds": args.seeds, "epochs": args.epochs,
                       "width": args.width, "questions": question_counts(dataset.prepared),
                       "question_only": question_only(dataset.prepared)}
            for kind in args.models:
                runs = []
                for seed in args.seeds:
                    runs.append(train_one(kind, seed, dataset, workdir / f"{args.scenes}_{images}", args))
                    print(images, kind, seed, {k: runs[-1][k] for k in ("overall", "per_kind", "train_seconds")},
                          flush=True)
                figures[kind] = summary(runs)
                figures["lead"] = leads(figures, args.models)
                harness.write_results(out, figures)
            print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
