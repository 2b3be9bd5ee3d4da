"""Real questions: the default MLP and LSTM, question-only, against three simple references.

Builds (once) the question-only dataset that ``../shared/data/real_questions.py`` writes from
60,578 real VQA v1 questions with their modal answer (one constant image), then on its
default split (val = 20% of the images):

* trains ``vqa train mlp`` and ``vqa train lstm`` with the defaults (``TrainConfig.tutorial``,
  seed 0) for a fixed budget (--mlp-epochs, --lstm-epochs) and records the val accuracy
  after every epoch (``val_modal_accuracy``: exact match of the modal answer over all val
  questions, which is the official metric here since the ten answers agree);
* computes three references on the same split, exact match on val:
  the best train answer per question string (fallback: per first two words, then overall),
  a bag-of-words logistic regression (5,000 words, lbfgs, 200 iterations; scikit-learn),
  and a logistic regression on the L2-normalised sum of the prepared spaCy vectors
  (the MLP's own question input).

Run by hand (it takes tens of minutes on a CPU; see docs/real-questions.md):

    python -m bench.bench_real_questions --workdir /tmp/real-questions
    python -m bench.bench_real_questions --workdir /tmp/real-questions --models lstm --lstm-epochs 12 \
        --out bench/results_real_questions_lstm12.json

The results file is bench.harness's record (command, date, commit, machine), rewritten
after every epoch with the figures so far.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from bench import harness  # noqa: E402

TRAIN, VAL = "train2014", "val2014"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=Path("/tmp/vqa-real-questions"),
                   help="where the dataset, features and models go (reused when present)")
    p.add_argument("--script", type=Path, default=Path("../shared/data/real_questions.py"),
                   help="the shared real_questions.py (default: ../shared/data/real_questions.py)")
    p.add_argument("--models", nargs="*", choices=["mlp", "lstm"], default=["mlp", "lstm"])
    p.add_argument("--mlp-epochs", type=int, default=10)
    p.add_argument("--lstm-epochs", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-flags", default="", help="extra TrainConfig fields as JSON, e.g. '{\"tutorial_recipe\": true}'")
    p.add_argument("--skip-references", action="store_true")
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("results_real_questions.json"))
    p.add_argument("--table", nargs="+", type=Path, metavar="RESULTS_JSON",
                   help="instead: print the markdown table of these results files (docs/real-questions.md)")
    return p.parse_args(argv)


def build_dataset(workdir: Path, script: Path) -> tuple[Path, Path, Path]:
    """real_questions.py -> vqa features --karpathy -> vqa prepare, each skipped when done."""
    raw, features, prepared = workdir / "raw", workdir / "features.h5", workdir / "preprocessed"
    steps = [(raw / "vqa", [sys.executable, str(script), str(raw)]),
             (features, [sys.executable, "-m", "vqa", "features", "--karpathy", str(raw / "karpathy"),
                         "--out", str(features)]),
             (prepared / "vqa_data.h5", [sys.executable, "-m", "vqa", "prepare", "--data-dir", str(raw / "vqa"),
                                         "--version", "v2", "--out", str(prepared)])]
    for done, command in steps:
        if not done.exists():
            subprocess.run(command, check=True)
    return raw / "vqa", features, prepared


def load_questions(vqa_dir: Path, split: str) -> tuple[list[str], list[str]]:
    """(question strings, modal answers) of one split, in file order."""
    questions = json.loads((vqa_dir / f"v2_OpenEnded_mscoco_{split}_questions.json").read_text())["questions"]
    annotations = json.loads((vqa_dir / f"v2_mscoco_{split}_annotations.json").read_text())["annotations"]
    answers = {a["question_id"]: a["multiple_choice_answer"] for a in annotations}
    return [q["question"] for q in questions], [answers[q["question_id"]] for q in questions]


def _key(question: str, words: int | None = None) -> str:
    tokens = question.lower().rstrip("?").split()
    return " ".join(tokens if words is None else tokens[:words])


def per_question_string(train_q, train_a, val_q, val_a) -> float:
    """Val exact match of the commonest train answer per question string (fallback: first two words)."""
    from vqa.evaluate import question_only_answers

    by_two_words = question_only_answers([_key(q, 2) for q in train_q], train_a, [_key(q, 2) for q in val_q])
    by_string = question_only_answers(map(_key, train_q), train_a, map(_key, val_q), unseen=None)
    guesses = [whole if whole is not None else first for whole, first in zip(by_string, by_two_words)]
    return sum(guess == a for guess, a in zip(guesses, val_a)) / len(val_a)


def logistic_regression(x_train, y_train, x_val, y_val) -> float:
    """Val exact match of a multinomial logistic regression (lbfgs, 200 iterations)."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(solver="lbfgs", max_iter=200)
    model.fit(x_train, y_train)
    return float(np.mean(model.predict(x_val) == np.asarray(y_val)))


def references(vqa_dir: Path, prepared_dir: Path) -> dict:
    """The three references on the default split (LRs trained on the top-K answers, as the models)."""
    from sklearn.feature_extraction.text import CountVectorizer

    from vqa.prepared import load_prepared

    train_q, train_a = load_questions(vqa_dir, TRAIN)
    val_q, val_a = load_questions(vqa_dir, VAL)
    prepared = load_prepared(prepared_dir)
    top = set(prepared.answers)
    keep = np.array([a in top for a in train_a])
    result = {"per_question_string": per_question_string(train_q, train_a, val_q, val_a)}
    vectorizer = CountVectorizer(max_features=5000)
    bow_train = vectorizer.fit_transform(train_q)
    labels = np.array(train_a, dtype=object)
    result["bag_of_words_lr"] = logistic_regression(bow_train[keep], labels[keep], vectorizer.transform(val_q), val_a)

    def summed(split):
        x = prepared.embeddings[prepared.splits[split].token_ids].sum(axis=1)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    # The prepared splits keep the questions JSON order (checked by the question ids).
    result["spacy_sum_lr"] = logistic_regression(summed(TRAIN)[keep], labels[keep], summed(VAL), val_a)
    return {k: round(100 * v, 2) for k, v in result.items()}


def summarise(history: dict, **facts) -> dict:
    """Per-epoch val accuracy (percent), train accuracy, loss and the last three epochs' moves."""
    val = [round(100 * v, 2) for v in history.get("val_modal_accuracy", [])]
    return {**facts, "val_accuracy": val, "train_accuracy": [round(v, 4) for v in history.get("accuracy", [])],
            "loss": [round(v, 4) for v in history.get("loss", [])], "learning_rate": history.get("learning_rate", []),
            "last_three_moves": [round(abs(b - a), 2) for a, b in zip(val[-3:], val[-2:])]}


def train(kind: str, args, data_dir: Path, features: Path, save) -> dict:
    """One default run; val accuracy (percent, all val questions) after every epoch, saved as it goes."""
    import keras

    from vqa.train import TrainConfig, train_model

    epochs = args.mlp_epochs if kind == "mlp" else args.lstm_epochs
    config = TrainConfig.for_model(kind, epochs=epochs, seed=args.seed, verbose=2, **json.loads(args.train_flags or "{}"))
    facts = {"epochs": epochs, "config": dict(vars(config))}
    start, history = time.time(), {}

    class Save(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            for key, value in (logs or {}).items():
                history.setdefault(key, []).append(float(value))
            save(kind, summarise(history, **facts, seconds=round(time.time() - start)))

    train_model(config, data_dir=data_dir, features_path=features, out_dir=args.workdir / "models" / kind,
                logdir=args.workdir / "Graph" / kind, overwrite=True, extra_callbacks=(Save(),))
    keras.backend.clear_session()
    return summarise(history, **facts, seconds=round(time.time() - start))


def markdown_table(paths: list[Path]) -> str:
    """The results files merged into the docs' table: one row per reference or per model epoch."""
    merged = {}
    for path in paths:
        record = json.loads(path.read_text())
        merged.update(record.get("figures", record))  # files before bench.harness held the figures at the top
    names = {"per_question_string": "best train answer per question string (fallback: first two words)",
             "bag_of_words_lr": "bag-of-words logistic regression (5,000 words, lbfgs, 200 iterations)",
             "spacy_sum_lr": "logistic regression on the L2-normalised sum of the prepared spaCy vectors"}
    rows = ["| run | val accuracy (exact match, %) |", "|---|---|"]
    rows += [f"| {names[k]} | {v:.2f} |" for k, v in merged.get("references", {}).items()]
    for kind in ("mlp", "lstm"):
        if kind in merged:
            val = merged[kind]["val_accuracy"]
            rows.append(f"| {kind.upper()} (defaults, seed 0), epochs 1-{len(val)} | "
                        f"{' / '.join(f'{v:.2f}' for v in val)} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.table:
        print(markdown_table(args.table))
        return 0
    vqa_dir, features, prepared = build_dataset(args.workdir, args.script)
    results = {"load_average_start": harness.load_average()}

    def save(key, value):
        results[key] = value
        harness.write_results(args.out, results)

    if not args.skip_references:
        save("references", references(vqa_dir, prepared))
        print("references", json.dumps(results["references"]), flush=True)
    for kind in args.models:
        save(kind, train(kind, args, prepared, features, save))
        print(kind, json.dumps(results[kind]["val_accuracy"]), flush=True)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
