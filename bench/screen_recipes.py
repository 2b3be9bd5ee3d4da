"""Short screens behind the per-change tables of docs/real-questions.md (run by hand).

Three modes, each appending one JSON line per run to OUT (each line is bench.harness's
record: command, date, commit, machine, and the run's figures):

* ``mlp PREPARED_DIR OUT RUNS``: the MLP's layers on the real question-only set, fed the
  precomputed question vector (the constant image adds nothing, so it is left out), with
  the knobs of each run in RUNS (a JSON list): ``opt`` adam|rmsprop, ``lr``, ``dropout``,
  ``first_dropout``, ``first_init`` / ``init`` / ``out_init`` (Keras initialisers), ``qstd``
  (standardise the summed question with the train statistics before its L2 norm),
  ``layers`` (tanh layers), ``batch``, ``epochs``, ``schedule`` ("plateau": halve the rate when
  val loss stops falling), ``wd`` (weight decay, with ``opt`` adamw), ``smooth`` (label smoothing). Val accuracy = exact match over all val questions.
* ``crowded ROOT NUM_IMAGES``: ``vqa synth`` scenes of 4-6 shapes, prepared, with random
  ReLU image vectors (not VGG16: the language is what is screened; ``vqa.sample_dataset``).
* ``train ROOT OUT RUNS``: ``vqa.train.train_model`` on ROOT (from ``crowded``) with each
  run's TrainConfig overrides, next to the best train answer per question string.

    python -m bench.screen_recipes mlp /tmp/real/preprocessed screen.jsonl '[{"name": "tutorial", "epochs": 4}]'
    python -m bench.screen_recipes crowded /tmp/crowded 500
    python -m bench.screen_recipes train /tmp/crowded screen.jsonl '[{"name": "adam", "epochs": 2, "batch_size": 32}]'
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from bench import harness  # noqa: E402


def question_vectors(embeddings, token_ids, statistics=None):
    """L2-normalised sums of word vectors, standardised first when statistics are given."""
    x = embeddings[token_ids].sum(axis=1)
    if statistics is not None:
        x = (x - statistics[0]) / np.sqrt(statistics[1])
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def mlp(run: dict, num_answers: int):
    """The MLP head on a 300-d question vector, with the run's knobs."""
    import keras

    dropout = run.get("dropout", 0.5)
    inputs = keras.Input((300,))
    x = keras.layers.Dense(1024, kernel_initializer=run.get("first_init", "uniform"))(inputs)
    x = keras.layers.Dropout(run.get("first_dropout", dropout))(x)
    for _ in range(run.get("layers", 3)):
        x = keras.layers.Dense(1024, activation="tanh", kernel_initializer=run.get("init", "uniform"))(x)
        x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(num_answers, activation="softmax", kernel_initializer=run.get("out_init", "uniform"))(x)
    model = keras.Model(inputs, outputs)
    optimizer = {"rmsprop": keras.optimizers.RMSprop, "adam": keras.optimizers.Adam,
                 "adamw": keras.optimizers.AdamW}[run.get("opt", "rmsprop")]
    extra = {"weight_decay": run["wd"]} if "wd" in run else {}
    if run.get("smooth"):  # label smoothing needs one-hot targets (screen_mlp passes them)
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=run["smooth"])
    else:
        loss = "sparse_categorical_crossentropy"
    model.compile(optimizer(learning_rate=run.get("lr", 1e-3), **extra), loss, metrics=["accuracy"])
    return model


def screen_mlp(prepared_dir: Path, out: Path, runs: list[dict]) -> None:
    import keras

    from vqa.prepared import load_prepared
    from vqa.data import question_statistics

    prepared = load_prepared(prepared_dir)
    train, val = prepared.splits["train2014"], prepared.splits["val2014"]
    keep = train.labels >= 0
    for run in runs:
        keras.utils.set_random_seed(0)
        stats = question_statistics(prepared.embeddings, train.token_ids) if run.get("qstd") else None
        x_train = question_vectors(prepared.embeddings, train.token_ids, stats)[keep]
        x_val = question_vectors(prepared.embeddings, val.token_ids, stats)
        model, record = mlp(run, len(prepared.answers)), {**run, "val": [], "train_accuracy": []}
        start = time.time()
        y_train, y_val = train.labels[keep], val.labels[val.labels >= 0]
        if run.get("smooth"):
            y_train, y_val = np.eye(len(prepared.answers), dtype=np.float32)[y_train], np.eye(len(prepared.answers), dtype=np.float32)[y_val]
        # "plateau": halve the rate when val loss (top-K val questions) stops falling, as --lr-schedule plateau
        plateau = keras.callbacks.ReduceLROnPlateau(factor=0.5, patience=0, min_lr=run.get("lr", 1e-3) / 32)
        callbacks = [plateau] if run.get("schedule") == "plateau" else []

        class Record(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                predictions = np.argmax(self.model.predict(x_val, batch_size=1024, verbose=0), axis=1)
                record["val"].append(round(100 * float(np.mean(predictions == val.labels)), 2))
                record["train_accuracy"].append(round(logs["accuracy"], 4))
                record.setdefault("lr", []).append(float(self.model.optimizer.learning_rate))
                print(run.get("name"), record["val"], flush=True)

        model.fit(x_train, y_train, batch_size=run.get("batch", 128), epochs=run["epochs"], verbose=0,
                  validation_data=(x_val[val.labels >= 0], y_val), callbacks=callbacks + [Record()])
        append_record(out, {**record, "seconds": round(time.time() - start)})
        keras.backend.clear_session()


def append_record(out: Path, figures: dict) -> None:
    """Append one run to ``out`` as a line holding the harness's record (command, date, commit, machine)."""
    with out.open("a") as f:
        f.write(json.dumps(harness.results_record(figures)) + "\n")


def make_crowded(root: Path, num_images: int) -> None:
    from vqa.sample_dataset import build_sample_dataset

    dataset = build_sample_dataset(root, num_images=num_images, seed=0, min_objects=4, max_objects=6,
                                   features=("random",))
    print(dataset.prepared, dataset.features_for("lstm"))


def best_train_answer(prepared_dir: Path) -> float:
    """Val accuracy of the commonest train answer per question (token ids)."""
    from vqa.prepared import load_prepared
    from vqa.evaluate import question_only_answers

    splits = load_prepared(prepared_dir).splits
    train, val = splits["train2014"], splits["val2014"]
    guesses = question_only_answers(map(bytes, train.token_ids), train.labels, map(bytes, val.token_ids), unseen=None)
    return float(np.mean([guess == label for guess, label in zip(guesses, val.labels)]))


def screen_training(root: Path, out: Path, runs: list[dict]) -> None:
    import keras

    from vqa.train import TrainConfig, train_model

    reference = best_train_answer(root / "preprocessed")
    for run in runs:
        run = dict(run)
        name, kind = run.pop("name"), run.pop("model", "lstm")
        config = TrainConfig.for_model(kind, seed=0, verbose=0, **run)
        start = time.time()
        history = train_model(config, data_dir=root / "preprocessed", features_path=root / "features_random.h5",
                              out_dir=root / "models" / name, logdir=root / "Graph" / name, overwrite=True)
        record = {"name": name, **run, "val": [round(v, 4) for v in history["val_modal_accuracy"]],
                  "loss": [round(v, 3) for v in history["loss"]], "best_train_answer": reference,
                  "seconds": round(time.time() - start)}
        print(json.dumps(record), flush=True)
        append_record(out, record)
        keras.backend.clear_session()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    mode, root = argv[0], Path(argv[1])
    if mode == "mlp":
        screen_mlp(root, Path(argv[2]), json.loads(argv[3]))
    elif mode == "crowded":
        make_crowded(root, int(argv[2]))
    elif mode == "train":
        screen_training(root, Path(argv[2]), json.loads(argv[3]))
    else:
        raise SystemExit(__doc__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
