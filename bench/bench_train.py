"""Training samples/s of `vqa train` against the same run with its batches in memory, and input scaling.

    python -m bench.bench_train [--images 1200] [--steps N] [--repeats 5] [--out bench/results_train.json]
    python -m bench.bench_train --quick --out /tmp/train.json   # the SAN on 80 images, 1 run

On a generated dataset (`vqa synth` scenes, prepared; fc7-shaped random features for the MLP
and the LSTM, a random-weight VGG16 ``block5_pool`` grid at ``--grid-image-size`` for the SAN):

* pipeline: samples/s of ``vqa train <model>`` itself at the model's default batch size, 2 epochs,
  each a whole pass over the train split (so every model reads the same questions, whatever its
  batch size and bucketed widths) or ``--steps`` batches, the second epoch's ``train_seconds``
  from history.json; the same with ``--loss soft`` (sigmoid over the soft scores);
* ceiling: samples/s of ``fit`` on in-memory random arrays of the same shapes, through the
  model that run wrote (questions padded to the mean bucketed width);
* each round runs modal and soft (soft first every other round), then the ceiling; rates are
  medians over ``--repeats`` rounds, ratios the medians of each round's ratio;
* input scaling: the MLP's and the LSTM's val modal accuracy per epoch with both the question
  sum and the image L2-normalised, the image only, or neither, and with the tutorial's whole
  recipe, on ``make_scaling_data``'s colour/shape set, whose answers need the image; every run
  with the modal loss (the tutorial's softmax), so that only the inputs and the recipe differ.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench import harness

from vqa.config import IMAGE_LAYOUTS

MODELS = tuple(IMAGE_LAYOUTS)  # every model `vqa train` builds
EPOCH_QUESTIONS = 443_757  # VQA v2 train: the projected epoch
# Input scaling: which of the question sum and the image vector are L2-normalised (--norm-question,
# --norm-image) under this project's recipe ("both": the MLP's default, "image": the LSTM's), and the
# tutorial's whole recipe (raw inputs, RMSprop, its dropout and initialisers: --tutorial-recipe).
SCALING = {"both": {"norm_question": True, "norm_image": True},
           "image": {"norm_question": False, "norm_image": True},
           "neither": {"norm_question": False, "norm_image": False},
           "tutorial": {"tutorial_recipe": True}}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--images", type=int, default=1200, help="generated scenes (default: 1200)")
    p.add_argument("--grid-image-size", type=int, default=224, help="the SAN's grid (default: 224 -> 7 x 7)")
    p.add_argument("--steps", type=int, default=None, help="timed batches per run (default: a whole pass)")
    p.add_argument("--repeats", type=int, default=5, help="median of this many rounds (default: 5)")
    p.add_argument("--batch-size", type=int, default=None, help="for every model (default: each model's own)")
    p.add_argument("--scaling-epochs", type=int, default=10, help="epochs per input-scaling run (default: 10)")
    p.add_argument("--quick", action="store_true",
                   help="the SAN only, 80 images, 64 px grid, batch 32, 3 steps, 1 repeat; 1 scaling epoch")
    p.add_argument("--workdir", type=Path, default=None, help="keep the data here (default: a temporary folder)")
    p.add_argument("--out", type=Path, default=harness.REPOSITORY / "bench" / "results_train.json")
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.grid_image_size, args.batch_size, args.steps, args.repeats = 80, 64, 32, 3, 1
        args.models, args.scaling_epochs = ["san"], 1
    return args


def throughput(kind: str, dataset, workdir: Path, args) -> dict:
    """Pipeline (modal, soft) and ceiling samples/s of one model, median of --repeats rounds; the
    ratios are the medians of each round's, so that load drifting between rounds cancels out."""
    flags = ["--batch-size", str(args.batch_size)] if args.batch_size else []
    questions = harness.trained_questions(dataset.prepared)
    runs = {"modal": [], "soft": [], "ceiling": []}
    order = ("modal", "soft", "ceiling")
    for round_ in range(args.repeats):  # the three in turn, modal and soft swapped every other round
        for name in order if round_ % 2 == 0 else (order[1], order[0], order[2]):
            runs[name].append(harness.train_speed(
                kind, data=dataset.prepared, features=dataset.features_for(kind), out=workdir / f"model_{kind}_{name}",
                steps=args.steps, flags=[*flags, "--loss", "soft" if name == "soft" else "modal"],
                cached=name == "ceiling"))
    config = json.loads((workdir / f"model_{kind}_modal" / "config.json").read_text())
    modal, soft, ceiling = runs["modal"], runs["soft"], runs["ceiling"]
    result = {"batch_size": config["train"]["batch_size"], "timed_steps": args.steps or "pass",
              "train_questions": questions, "rounds": args.repeats,
              "pipeline_samples_per_s": round(statistics.median(modal), 1),
              "ceiling_samples_per_s": round(statistics.median(ceiling), 1),
              "pipeline_vs_ceiling": round(statistics.median(m / c for m, c in zip(modal, ceiling)), 3)}
    result["projected_epoch_s"] = round(EPOCH_QUESTIONS / result["pipeline_samples_per_s"])
    result["soft_pipeline_samples_per_s"] = round(statistics.median(soft), 1)
    result["soft_over_modal"] = round(statistics.median(s / m for s, m in zip(soft, modal)), 3)
    result["runs_samples_per_s"] = {name: [round(value, 1) for value in values] for name, values in runs.items()}
    return result


def input_scaling(workdir: Path, args) -> dict:
    """Val modal accuracy after each epoch per model and input scaling, on data whose answers need the image."""
    from vqa.train import TrainConfig, train_model

    root = workdir / "scaling"
    root.mkdir(exist_ok=True)
    images = {"train_images": 60, "val_images": 20} if args.quick else {}
    data, features = make_scaling_data(root, np.random.default_rng(0), **images)
    results = {}
    for kind in ("mlp",) if args.quick else ("mlp", "lstm"):
        results[kind] = {}
        for name, choice in SCALING.items():
            config = TrainConfig.for_model(kind, epochs=args.scaling_epochs, batch_size=32, seed=0, verbose=0,
                                          standardize_image=False, loss="modal", **choice)
            history = train_model(config, data_dir=data, features_path=features, out_dir=root / f"{kind}_{name}",
                                  logdir=root / "logs", overwrite=True)
            results[kind][name] = [round(value, 3) for value in history["val_modal_accuracy"]]
            print(f"input scaling, {kind} {name}: val modal accuracy {results[kind][name]}", flush=True)
    return results


def make_scaling_data(root: Path, rng, *, train_images=400, val_images=100, per_image=3):
    """Prepared files at real scale where the answer needs the question kind AND the image.

    Images have one of 3 colours and 3 shapes; "what color/shape ..." questions ask for one.
    Word vectors have spaCy md's norms (40-110); 4096-d ReLU "fc7" vectors have norms ~40,
    of which the colour/shape units carry ~17.
    """
    words = ["<pad>", "<oov>", "what", "color", "shape", "is", "the", "object", "of", "kind", "this", "in", "picture"]
    texts = {0: ["what color is the object", "what is the color of this object"],
             1: ["what shape is the object", "what kind of shape is in this picture"]}
    answers = ["blue", "circle", "green", "red", "square", "triangle"]
    names = (("blue", "green", "red"), ("circle", "square", "triangle"))
    embeddings = rng.normal(size=(len(words), 300))
    embeddings *= (rng.uniform(40, 110, len(words)) / np.linalg.norm(embeddings, axis=1))[:, None]
    embeddings[:2] = 0
    attributes = rng.integers(3, size=(train_images + val_images, 2))
    features = 0.8 * np.maximum(rng.normal(size=(len(attributes), 4096)), 0)
    for i, (color, shape) in enumerate(attributes):
        features[i, 64 * color:64 * (color + 1)] += 1.5
        features[i, 64 * (3 + shape):64 * (4 + shape)] += 1.5
    from vqa.feature_file import FeaturesFile
    from vqa.prepared import SplitRecords, write_prepared

    splits = []
    for name, images in (("train2014", range(train_images)), ("val2014", range(train_images, len(attributes)))):
        kinds = rng.integers(2, size=(len(images), per_image)).ravel()
        image_ids = np.repeat(np.asarray(images), per_image)
        questions = [texts[kind][rng.integers(2)] for kind in kinds]
        tokens = np.zeros((len(kinds), 30), np.int32)
        for q, question in enumerate(questions):
            ids = [words.index(w) for w in question.split()]
            tokens[q, :len(ids)] = ids
        modal = [names[k][attributes[i, k]] for i, k in zip(image_ids, kinds)]
        splits.append(SplitRecords(
            name, np.arange(len(kinds)), image_ids, questions, tokens,
            (tokens > 0).sum(1), question_types=[" ".join(q.split()[:3]) for q in questions],
            answer_types=["other"] * len(kinds), modal_answers=modal, human_answers=[[m] * 10 for m in modal],
            labels=np.asarray([answers.index(m) for m in modal], np.int32)))
    write_prepared(root, words=words, embeddings=embeddings, answers=answers, splits=splits,
                   spacy_model="en_core_web_md")
    FeaturesFile.write(root / "features.h5", features, np.arange(len(attributes)), source="noise", cnn_weights="")
    return root, root / "features.h5"


def main(argv=None) -> int:
    from vqa.sample_dataset import build_sample_dataset

    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        dataset = build_sample_dataset(workdir / "data", num_images=args.images, features=("random", "grid"),
                                       grid_image_size=args.grid_image_size, num_answers=1000)
        figures = {"images": args.images, "grid_image_size": args.grid_image_size}
        for kind in args.models:
            figures[kind] = throughput(kind, dataset, workdir, args)
            print(kind, json.dumps(figures[kind]), flush=True)
            harness.write_results(args.out, figures)
        figures["input_scaling"] = {"epochs": args.scaling_epochs, **input_scaling(workdir, args)}
    harness.write_results(args.out, figures)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
