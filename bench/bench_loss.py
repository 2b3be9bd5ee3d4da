"""The two losses, modal and soft, on the same data, budget and seeds, scored with the official metric.

    python -m bench.bench_loss [--images 1500] [--epochs 10] [--width 1] [--seeds 0] [--models mlp lstm san]
                               [--real-questions PATH/real_questions.py] [--out bench/results_loss.json]
    python -m bench.bench_loss --quick --out /tmp/loss.json   # 40 scenes, 1 epoch, narrow MLP and SAN

For each dataset, model and seed, ``vqa train MODEL --loss modal`` and ``--loss soft`` (each model's
own defaults otherwise, its widths times ``--width``), then ``vqa evaluate`` on val: overall and per
answer type, soft - modal, train seconds and the last epoch's samples/s (history.json). Datasets:

* ``disagree``: one-shape scenes whose 10 simulated humans disagree as VQA's do (``vqa synth
  --disagreement real``);
* ``relations``: cluttered scenes (``--relations --disagreement real``);
* ``real``: the real VQA v1 questions, question only, modal answers only (so the official metric is
  exact match and the soft targets are one-hot), made by the script ``--real-questions`` names;
  skipped without it.

The data comes from seed 0 whatever ``--seeds`` (the training seeds). VGG16 has random weights:
nothing can be downloaded here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from bench import harness

HERE = Path(__file__).resolve().parent
LOSSES = ("modal", "soft")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=1500, help="generated scenes per synthetic set (default: 1500)")
    p.add_argument("--epochs", type=int, default=10, help="epochs of every run (default: 10)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default: 0)")
    p.add_argument("--models", nargs="+", default=["mlp", "lstm", "san"], help="any models `vqa train` takes")
    p.add_argument("--width", type=float, default=1.0, help="every default *_units width times this (default: 1)")
    p.add_argument("--image-size", type=int, default=224, help="grid features' image size (default: 224 -> 7 x 7)")
    p.add_argument("--real-questions", type=Path, default=None,
                   help="real_questions.py (the shared data's); without it the real questions are skipped")
    p.add_argument("--real-max-questions", type=int, default=20000,
                   help="real questions used, the first of the file (default: 20000; 0: all)")
    p.add_argument("--quick", action="store_true", help="40 scenes, 1 epoch, widths x 0.05, a 64-pixel grid, "
                   "300 real questions, the MLP and the SAN")
    p.add_argument("--workdir", type=Path, default=None,
                   help="keep the data and models here; a later run with the same sizes reuses the data "
                   "(default: a temporary folder)")
    p.add_argument("--out", type=Path, default=HERE / "results_loss.json")
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.epochs, args.width, args.image_size, args.real_max_questions = 40, 1, 0.05, 64, 300
        args.models = ["mlp", "san"]
    return args


def synthetic(folder: Path, args, *, relations: bool) -> dict[str, Path]:
    """A generated set whose humans disagree as VQA's do: prepared folder, fc7 and grid features."""
    from vqa.sample_dataset import GRID, RANDOM, VECTOR, build_sample_dataset

    kinds = (RANDOM, GRID) if args.quick else (VECTOR, GRID)  # --quick: noise for fc7, no 224-pixel VGG16 pass
    dataset = build_sample_dataset(folder, num_images=args.images, seed=0, relations=relations,
                                   disagreement="real", features=kinds, grid_image_size=args.image_size)
    return {"prepared": dataset.prepared, "vector": dataset.features_for("mlp"), "grid": dataset.features[GRID]}


def real(folder: Path, args) -> dict[str, Path]:
    """The real questions as a question-only set: fc7 of its constant image (Karpathy's file), its grid."""
    import numpy as np
    from PIL import Image

    from vqa import artifacts
    from vqa.features import build_features_file, extract_image_features
    from vqa.prepare import prepare_dataset

    subprocess.run([sys.executable, str(args.real_questions), str(folder),
                    "--max-questions", str(args.real_max_questions)], check=True, stdout=subprocess.DEVNULL)
    build_features_file(folder / "features.h5", karpathy=folder / "karpathy")
    image_id = json.loads((folder / "karpathy" / "dataset.json").read_text())["images"][0]["cocoid"]
    (folder / "images").mkdir(exist_ok=True)  # the same constant image, for the grid models
    Image.fromarray(np.full((args.image_size, args.image_size, 3), 128, np.uint8)).save(
        folder / "images" / f"COCO_val2014_{image_id:012d}.jpg")
    extract_image_features(folder / "images", folder / "grid.h5", cnn_weights="random",
                           layout=artifacts.LAYOUT_GRID, image_size=args.image_size)
    prepare_dataset(data_dir=folder / "vqa", version="v2", out_dir=folder / "preprocessed", progress=False)
    return {"prepared": folder / "preprocessed", "vector": folder / "features.h5", "grid": folder / "grid.h5"}


def reused(folder: Path, build, args) -> dict[str, Path]:
    """The set in ``folder``: built once, then reused by a run with the same ``--workdir`` and sizes."""
    record, sizes = folder / "set.json", {"images": args.images, "image_size": args.image_size,
                                           "real_max_questions": args.real_max_questions, "quick": args.quick}
    if record.exists() and json.loads(record.read_text())["sizes"] == sizes:
        return {key: Path(path) for key, path in json.loads(record.read_text())["paths"].items()}
    data = build(folder)
    record.write_text(json.dumps({"sizes": sizes, "paths": {key: str(path) for key, path in data.items()}}))
    return data


def widths(model: str, width: float) -> dict[str, int]:
    """The model's *_units settings, each default times ``width``."""
    from vqa.config import TrainConfig, flag_fields

    defaults = TrainConfig.for_model(model)
    return {f.name: max(1, round(getattr(defaults, f.name) * width))
            for f in flag_fields(model) if f.name.endswith("_units")}


def run_one(model: str, loss: str, seed: int, data: dict[str, Path], workdir: Path, args) -> dict:
    """``vqa train MODEL --loss LOSS`` then ``vqa evaluate`` on val: the official figures and the speed."""
    from vqa.config import IMAGE_LAYOUTS, TrainConfig
    from vqa.evaluate import evaluate_model
    from vqa.train import train_model

    config = TrainConfig.for_model(model, loss=loss, epochs=args.epochs, seed=seed, verbose=2,
                                   **widths(model, args.width))
    features, out = data[IMAGE_LAYOUTS[model]], workdir / "models" / f"{model}-{loss}-{seed}"
    start = time.perf_counter()
    train_model(config, data_dir=data["prepared"], features_path=features, out_dir=out,
                logdir=workdir / "Graph" / out.name, overwrite=True)
    seconds = time.perf_counter() - start
    report = evaluate_model(out, data_dir=data["prepared"], features_path=features, split="val",
                            results_path=workdir / "results" / f"{out.name}.json")
    last_epoch = json.loads((out / "history.json").read_text())["train_seconds"][-1]
    return {"overall": report["overall"], "perAnswerType": report["perAnswerType"],
            "train_seconds": round(seconds, 1), "samples_per_s": round(data["samples"] / last_epoch, 1)}


def mean_of(runs: list[dict]) -> dict:
    """The seeds' mean of each figure (and the runs themselves when there are several)."""
    def mean(values):
        return round(statistics.mean(values), 2)

    result = {"overall": mean([r["overall"] for r in runs]),
              "perAnswerType": {t: mean([r["perAnswerType"][t] for r in runs]) for t in runs[0]["perAnswerType"]},
              "train_seconds": mean([r["train_seconds"] for r in runs]),
              "samples_per_s": mean([r["samples_per_s"] for r in runs])}
    if len(runs) > 1:
        result["per_seed"] = runs
    return result


def compare(model: str, data: dict[str, Path], workdir: Path, args) -> dict:
    """Both losses for one model on one dataset, and soft - modal."""
    figures = {loss: mean_of([run_one(model, loss, seed, data, workdir, args) for seed in args.seeds])
               for loss in LOSSES}
    modal, soft = figures["modal"], figures["soft"]
    figures["soft_minus_modal"] = {
        "overall": round(soft["overall"] - modal["overall"], 2),
        "perAnswerType": {t: round(soft["perAnswerType"][t] - modal["perAnswerType"][t], 2)
                          for t in modal["perAnswerType"]}}
    return figures


def question_counts(prepared: Path) -> dict[str, int]:
    """Train and val questions in a prepared folder, and the train questions a model trains on (top-K answer)."""
    from vqa import artifacts
    from vqa.prepared import load_prepared

    splits = load_prepared(prepared).splits
    counts = {split: len(splits[f"{split}2014"].question_ids) for split in ("train", "val")}
    return {**counts, "trained": int((splits[artifacts.TRAIN_SPLIT].labels >= 0).sum())}


def main(argv=None) -> int:
    from vqa.features import RandomWeightsWarning

    args = parse_args(argv)
    warnings.simplefilter("ignore", RandomWeightsWarning)  # random VGG16 weights: nothing to download here
    figures = {"settings": {"images": args.images, "epochs": args.epochs, "seeds": args.seeds, "width": args.width,
                            "models": args.models, "image_size": args.image_size,
                            "real_max_questions": args.real_max_questions}}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        builders = {"disagree": lambda folder: synthetic(folder, args, relations=False),
                    "relations": lambda folder: synthetic(folder, args, relations=True),
                    "real": lambda folder: real(folder, args)}
        for name, build in builders.items():
            if name == "real" and args.real_questions is None:
                figures[name] = {"skipped": "no --real-questions given"}
                continue
            data = reused(workdir / name, build, args)
            figures[name] = {"questions": question_counts(data["prepared"])}
            data["samples"] = figures[name]["questions"]["trained"]
            for model in args.models:
                figures[name][model] = compare(model, data, workdir / name, args)
                print(name, model, {loss: figures[name][model][loss]["overall"] for loss in LOSSES}, flush=True)
                harness.write_results(args.out, figures)
    harness.write_results(args.out, figures)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
