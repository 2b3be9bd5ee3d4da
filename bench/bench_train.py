"""Training throughput: our input pipeline vs in-memory arrays vs the tutorial's spaCy-per-batch path.

For each model (MLP, LSTM) at the tutorial's sizes (1024 hidden units, 3x512 LSTM,
K answers, a ~14k-word vocabulary, 4096-d image features), three ways of feeding
the same network at the same batch size are timed over a few hundred samples:

* pipeline: ``vqa.data.QuestionBatches`` (token ids + feature rows gathered by index
  from a memory-mapped HDF5) into ``model.fit`` -- what ``vqa train`` runs;
* ceiling:  ``model.fit`` on in-memory random arrays of the same shapes (for the LSTM,
  padded to the pipeline's mean bucketed width);
* tutorial: the tutorial's loop -- ``nlp(question)`` with the FULL en_core_web_md pipeline
  on every question of every batch, vectors summed (MLP) or stacked into a (B, 30, 300)
  tensor (LSTM) in NumPy, image rows gathered in a Python loop, ``train_on_batch``
  on the same layers fed those vectors.

Prints samples/s (median of --repeats), the ratios and the projected epoch time on
VQA v2 train (--epoch-questions), and writes them as JSON (--out).

    python -m bench.bench_train                        # both models, defaults
    python -m bench.bench_train --models mlp --steps 100 --repeats 3

Results accumulate in the --out file (bench.harness's record): each model's entry keeps
the commit and the load average of the run that measured it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from bench import harness  # noqa: E402
from bench.harness import machine  # noqa: E402, F401  (bench_attention imports it from here)

# Question templates with VQA's style and length spread (v2 train averages ~6 words).
SUBJECTS = ["man", "woman", "dog", "cat", "bus", "table", "plate", "sign", "train", "kite", "person on the left",
            "building in the background", "boy holding the umbrella", "pizza"]
TEMPLATES = ["What color is the {}?", "Is the {} on the right?", "How many {}s are there?", "What is the {} doing?",
             "Is there a {} in this picture?", "What is on the {}?", "Where is the {}?",
             "What kind of {} is this?", "Why is the {} standing next to the red car near the street?",
             "Does the {} look happy?", "What is the {} made of?", "Is this {} real?"]


# --recipes: TrainConfig.for_model overrides, and the suffix of the result's key.
RECIPES = {"default": ({}, ""), "tutorial": ({"tutorial_recipe": True}, "_tutorial_recipe"),
           "no-lstm-dropout": ({"lstm_dropout": 0.0}, "_no_lstm_dropout")}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", choices=["mlp", "lstm"], default=["mlp", "lstm"])
    p.add_argument("--steps", type=int, default=40, help="timed MLP batches per repeat (default: 40)")
    p.add_argument("--lstm-steps", type=int, default=8, help="timed LSTM batches per repeat (default: 8)")
    p.add_argument("--warmup", type=int, default=3, help="untimed batches first (tracing, caches)")
    p.add_argument("--repeats", type=int, default=3, help="median of this many runs (default: 3)")
    p.add_argument("--vocabulary-size", type=int, default=14000)
    p.add_argument("--num-answers", type=int, default=1000)
    p.add_argument("--images", type=int, default=20000, help="rows in the features file (default: 20000)")
    p.add_argument("--epoch-questions", type=int, default=400000, help="VQA v2 train after top-1000 filtering")
    p.add_argument("--skip-tutorial", action="store_true", help="skip the (slow) spaCy-per-batch baseline")
    p.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=["default"],
                   help="time the default recipe, and/or --tutorial-recipe's (RMSprop, raw inputs), and/or the "
                        "default without LSTM input dropout, in one run")
    p.add_argument("--jit", nargs="+", choices=["auto", "on", "off"], default=["auto"],
                   help="time each recipe with each of these --jit settings, in one run (default: auto)")
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("results_train.json"))
    p.add_argument("--input-scaling", nargs="*", type=Path, metavar="DATA_DIR FEATURES",
                   help="instead: train each model with each --norm-* combination on this prepared data "
                        "(none given: a generated colour/shape set at real scale, see make_scaling_data)")
    p.add_argument("--scaling-epochs", type=int, default=10, help="epochs per --input-scaling run (default: 10)")
    return p.parse_args(argv)


def question_only_ceiling(split) -> float:
    """Val accuracy of the best answer per distinct question: the most an image-blind model can get."""
    from vqa.evaluate import question_only_answers

    rows, kept = list(map(bytes, split.token_ids)), split.labels >= 0  # -1: an answer outside the top K
    guesses = question_only_answers([row for row, keep in zip(rows, kept) if keep], split.labels[kept], rows)
    return float(np.mean((np.asarray(guesses) == split.labels) & kept))


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


def input_scaling(args) -> dict:
    """Final val modal accuracy of both models under each (norm_question, norm_image) choice.

    Image standardisation stays off here: these runs isolate the L2 choices (the
    effect of --standardize-image is measured by bench/bench_image_scaling.py).
    """
    from vqa.prepared import load_prepared
    from vqa.train import TrainConfig, train_model

    with tempfile.TemporaryDirectory() as tmp:
        if args.input_scaling:
            data_dir, features = args.input_scaling
        else:
            data_dir, features = make_scaling_data(Path(tmp), np.random.default_rng(0))
        results = {"data": str(data_dir) if args.input_scaling else "generated (make_scaling_data)",
                   "question_only_ceiling": round(question_only_ceiling(load_prepared(data_dir).splits["val2014"]), 3)}
        for kind in args.models:
            for nq in (True, False):
                for ni in (True, False):
                    config = TrainConfig.for_model(kind, epochs=args.scaling_epochs, batch_size=32, seed=0,
                                                  norm_question=nq, norm_image=ni, standardize_image=False,
                                                  verbose=0)
                    out = Path(tmp) / f"{kind}-{nq}-{ni}"
                    history = train_model(config, data_dir=data_dir, features_path=features, out_dir=out,
                                          logdir=Path(tmp) / "logs")
                    key = f"{kind} norm_question={nq} norm_image={ni}"
                    results[key] = [round(history["val_modal_accuracy"][e], 3) for e in (0, 2, -1)]
                    print(key, "val modal accuracy after 1, 3, last epochs:", results[key], flush=True)
    return results


def make_questions(rng, n: int) -> list[str]:
    """n VQA-like question strings."""
    return [TEMPLATES[rng.integers(len(TEMPLATES))].format(SUBJECTS[rng.integers(len(SUBJECTS))]) for _ in range(n)]


def make_split(rng, questions, nlp, *, vocabulary_size, num_answers, num_images):
    """Token ids with the questions' real token counts (random ids), image ids and labels."""
    from vqa.prepared import Split

    lengths = np.array([min(len(nlp.tokenizer(q)), 30) for q in questions], dtype=np.int32)
    tokens = rng.integers(2, vocabulary_size, (len(questions), 30)).astype(np.int32)
    tokens[np.arange(30)[None, :] >= lengths[:, None]] = 0
    image_ids = rng.integers(0, num_images, len(questions)).astype(np.int64) * 7 + 9
    labels = rng.integers(0, num_answers, len(questions)).astype(np.int32)
    return Split("train2014", tokens, lengths, image_ids, np.arange(len(questions)), labels)


def write_features(path: Path, rng, num_images: int) -> None:
    """A features file of sparse non-negative 4096-d rows (as fc7), written in blocks."""
    from vqa.feature_file import FeaturesFile

    with FeaturesFile.create(path, source="noise", cnn_weights="", num_rows=num_images) as writer:
        for start in range(0, num_images, 4096):
            stop = min(start + 4096, num_images)
            writer.append(np.maximum(rng.normal(size=(stop - start, 4096)), 0), np.arange(start, stop) * 7 + 9)


class BatchTimer:
    """A Keras callback factory timing batches after the warm-up."""

    def __new__(cls, warmup: int):
        import keras

        class _Timer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.ends = []

            def on_train_batch_end(self, batch, logs=None):
                float((logs or {}).get("loss", 0.0))  # wait for the step to finish
                self.ends.append(time.perf_counter())

            def seconds(self):
                return self.ends[-1] - self.ends[warmup - 1]

        return _Timer()


def time_fit(model, data, *, steps, warmup, batch_size, y=None) -> float:
    """Samples/s of one ``model.fit`` epoch of warmup + steps batches (warm-up excluded)."""
    timer = BatchTimer(warmup)
    if y is None:
        model.fit(data, epochs=1, steps_per_epoch=warmup + steps, verbose=0, callbacks=[timer])
    else:
        model.fit(data, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0, callbacks=[timer])
    return steps * batch_size / timer.seconds()


def tutorial_model(kind: str, num_answers: int):
    """The same layers as ``vqa.models`` fed word vectors, as the tutorial's Sequential models were."""
    import keras

    image = keras.Input((4096,), name="image_features")
    if kind == "mlp":
        words = keras.Input((300,), name="question")
        x = keras.layers.Dense(1024, kernel_initializer="uniform")(keras.layers.Concatenate()([words, image]))
        x = keras.layers.Dropout(0.5)(x)
    else:
        words = keras.Input((30, 300), name="question")
        x = words
        for i in range(3):
            x = keras.layers.LSTM(512, return_sequences=i < 2)(x)
        x = keras.layers.Concatenate()([x, image])
    for _ in range(3):
        x = keras.layers.Dropout(0.5)(keras.layers.Dense(1024, activation="tanh", kernel_initializer="uniform")(x))
    out = keras.layers.Dense(num_answers, activation="softmax", kernel_initializer="uniform", name="answer")(x)
    model = keras.Model({"question": words, "image_features": image}, out)
    model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy")
    return model


def tutorial_batch(kind, nlp, questions, image_ids, features, id_to_row):
    """One batch the tutorial's way: spaCy per question, NumPy sums, a Python loop over images."""
    if kind == "mlp":
        words = np.zeros((len(questions), 300), np.float32)
        for i, q in enumerate(questions):
            for token in nlp(q):
                words[i] += token.vector
    else:
        words = np.zeros((len(questions), 30, 300), np.float32)
        for i, q in enumerate(questions):
            for j, token in enumerate(nlp(q)):
                if j < 30:
                    words[i, j] = token.vector
    images = np.zeros((len(questions), 4096), np.float32)
    for i, image_id in enumerate(image_ids):
        images[i] = features[id_to_row[image_id]]
    return {"question": words, "image_features": images}


def time_tutorial(kind, model, nlp, questions, split, features, *, steps, warmup, batch_size) -> float:
    """Samples/s of the tutorial's train_on_batch loop (warm-up excluded)."""
    id_to_row = {int(i): r for r, i in enumerate(np.arange(features.shape[0]) * 7 + 9)}
    start = None
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        sl = slice(step * batch_size, (step + 1) * batch_size)
        batch = tutorial_batch(kind, nlp, questions[sl], split.image_ids[sl].tolist(), features, id_to_row)
        model.train_on_batch(batch, split.labels[sl])
    return steps * batch_size / (time.perf_counter() - start)


def bench_model(kind, args, rng, nlp, features_path, recipe="default", jit="auto"):
    """All three timings for one model, recipe and --jit setting; returns a result dict."""
    import keras

    from vqa.data import QuestionBatches, feature_rows
    from vqa.feature_file import load_features
    from vqa.train import TrainConfig, build_model

    config = TrainConfig.for_model(kind, jit=jit, **RECIPES[recipe][0])
    steps = args.steps if kind == "mlp" else args.lstm_steps
    n = (args.warmup + steps) * config.batch_size
    questions = make_questions(rng, n)
    split = make_split(rng, questions, nlp, vocabulary_size=args.vocabulary_size, num_answers=args.num_answers,
                       num_images=args.images)
    features, image_ids = load_features(features_path)
    embeddings = rng.normal(size=(args.vocabulary_size, 300)).astype(np.float32)
    # Statistics of the right shapes, so the default recipe's standardisation layers are timed too.
    _, model = build_model(config, embeddings=embeddings, num_answers=args.num_answers, image_shape=4096,
                           image_statistics=(np.zeros(4096, np.float32), np.ones(4096, np.float32)),
                           question_statistics=(np.zeros(300, np.float32), np.ones(300, np.float32)))
    dataset = QuestionBatches(split, features, feature_rows(split.image_ids, image_ids),
                              batch_size=config.batch_size, bucket=config.bucket, seed=0)
    timed = dataset.batches[args.warmup:]  # the widest batch goes first, into the warm-up
    width = 30 if not config.bucket else int(round(np.mean([split.lengths[b].max() for b in timed])))
    ceiling_x = {"question": split.token_ids[:, :width].copy(),
                 "image_features": rng.random((n, 4096), dtype=np.float32)}
    result = {"batch_size": config.batch_size, "timed_steps": steps, "ceiling_width": width, "recipe": recipe,
              "jit": jit}
    runs = {"pipeline": [], "ceiling": [], "tutorial": []}
    tutorial = None if args.skip_tutorial else tutorial_model(kind, args.num_answers)
    for _ in range(args.repeats):
        runs["pipeline"].append(time_fit(model, dataset, steps=steps, warmup=args.warmup, batch_size=config.batch_size))
        runs["ceiling"].append(time_fit(model, ceiling_x, y=split.labels, steps=steps, warmup=args.warmup,
                                        batch_size=config.batch_size))
        if tutorial is not None:
            runs["tutorial"].append(time_tutorial(kind, tutorial, nlp["full"], questions, split, features,
                                                  steps=steps, warmup=args.warmup, batch_size=config.batch_size))
    for name, values in runs.items():
        if values:
            result[f"{name}_samples_per_s"] = round(statistics.median(values), 1)
    result["pipeline_vs_ceiling"] = round(result["pipeline_samples_per_s"] / result["ceiling_samples_per_s"], 3)
    if runs["tutorial"]:
        result["pipeline_vs_tutorial"] = round(result["pipeline_samples_per_s"] / result["tutorial_samples_per_s"], 2)
    result["projected_epoch_s"] = round(args.epoch_questions / result["pipeline_samples_per_s"])
    keras.backend.clear_session()
    return result


class Spacy(dict):
    """The tokenizer-only nlp (for lengths) and, on demand, the tutorial's full pipeline."""

    def __init__(self, skip_full: bool):
        import spacy

        from vqa.text import load_spacy, resolve_spacy_model

        light = load_spacy()
        super().__init__(light=light, full=None if skip_full else spacy.load(resolve_spacy_model()))
        self.tokenizer = light.tokenizer


def software() -> dict:
    """The Keras version and backend that ran the bench (the machine is in the results record)."""
    import keras

    return {"keras": keras.__version__, "backend": keras.backend.backend()}


def earlier_results(path: Path) -> dict:
    """The entries an earlier run wrote to ``path`` (harness record, or the older flat layout)."""
    if not path.is_file():
        return {}
    record = json.loads(path.read_text())
    return dict(record.get("figures", record))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.input_scaling is not None and len(args.input_scaling) not in (0, 2):
        raise SystemExit("--input-scaling takes no argument or DATA_DIR FEATURES")
    if args.input_scaling is not None:
        results = {"software": software(), "settings": {k: str(v) for k, v in vars(args).items()},
                   **input_scaling(args)}
        name = "_".join(["results_input_scaling"] + [p.name for p in args.input_scaling[:1]]) + ".json"
        harness.write_results(args.out.with_name(name), results)
        return 0
    rng = np.random.default_rng(0)
    nlp = Spacy(skip_full=args.skip_tutorial)
    # Results of earlier runs for the other model are kept (re-run one model at a time).
    results = earlier_results(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        features_path = Path(tmp) / "features.h5"
        write_features(features_path, rng, args.images)
        for kind in args.models:
            for recipe, jit in [(recipe, jit) for recipe in args.recipes for jit in args.jit]:
                key = kind + RECIPES[recipe][1] + ("" if jit == "auto" else f"_jit_{jit}")
                load_start = harness.load_average()
                results[key] = bench_model(kind, args, rng, nlp, features_path, recipe, jit)
                results[key].update(load_average_start=load_start, load_average_end=harness.load_average(),
                                    git_commit=harness.git_commit(), software=software(),
                                    settings={k: str(v) for k, v in vars(args).items()})
                print(key, json.dumps(results[key]), flush=True)
    harness.write_results(args.out, results)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
