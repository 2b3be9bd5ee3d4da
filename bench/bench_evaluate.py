"""Time `vqa evaluate` at VQA v2 val size (214,354 questions): on a results file, and with `--model`.

    python -m bench.bench_evaluate [--questions 214354] [--repeats 3] [--out bench/results_evaluate.json]
    python -m bench.bench_evaluate --quick --out /tmp/evaluate.json   # 2,000 questions, 1 run
    python -m bench.bench_evaluate --inputs DIR   # only write the --model path's inputs (for bench_compare)

Generates a split with 10 human answers per question (yes/no, numbers as digits and words,
articles, punctuation and case variants, a long tail, humans who disagree) and times:

* ``evaluate_results_file`` end to end, and its scoring step against a plain per-question loop
  over the same rules (as the official VQAEval), which must give identical numbers;
* ``vqa evaluate --model`` in a fresh process, as a user runs it: the split prepared as
  ``vqa_data.h5``, random fc7 features for its images, the tutorial's MLP (1000 answers,
  3 x 1024 tanh) untrained; it predicts every question, writes the results and the report.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench import harness
from bench.harness import timed
from vqa import artifacts, evaluate, metric, official

# VQA v2 val: 214,354 questions about 40,504 images; the tutorial's MLP answers 1000 classes.
NUM_IMAGES = 40_504
NUM_ANSWERS = 1000
VOCABULARY_SIZE = 12_000

QUESTION_TYPES = (
    "is the", "what", "what is the", "how many", "what color is the", "is this", "are the", "what is",
    "is there a", "does the", "is it", "what kind of", "are there", "is this a", "what type of", "where is the",
    "what is the man", "are these", "can you", "is the man", "which", "what color are the", "who is",
    "what is on the", "how", "is there", "what are the", "why", "do", "what does the", "is he",
    "what color is", "are they", "what is in the", "what sport is", "what is the person", "has",
    "what time", "what room is", "is the woman", "what brand", "how many people are", "what are",
    "is that a", "what animal is", "why is the", "what is the woman", "does this", "could", "was",
    "what is the name", "is", "are", "none of the above", "what number is", "is the person", "where are the",
    "do you", "how many people are in", "what is the color of the", "what is this", "which is",
    "what are the people", "is this person", "what color",
)
COLORS = ("red", "blue", "green", "white", "black", "yellow", "brown", "gray", "orange", "pink", "purple")
OBJECTS = ("dog", "cat", "man", "woman", "pizza", "frisbee", "kite", "skateboard", "bus", "train", "horse",
           "tennis", "baseball", "surfing", "kitchen", "bathroom", "table", "grass", "snow", "umbrella",
           "giraffe", "elephant", "zebra", "sheep", "cow", "bench", "clock", "phone", "laptop", "banana")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
TAIL_WORDS = tuple(f"{a}{b}" for a in ("bri", "sto", "fla", "mo", "ca", "te", "ru", "pe", "lo", "vi")
                   for b in ("ck", "ne", "ter", "mp", "ll", "nd", "sh", "ry", "ta", "zo", "ph", "lk"))


def common_answers(answer_type: str) -> list[str]:
    """The head of the answer distribution for one answer type."""
    if answer_type == "yes/no":
        return ["yes", "no"]
    if answer_type == "number":
        return [str(n) for n in range(21)] + list(NUMBER_WORDS) + ["1,000", "3.5", "100", "12:30"]
    return list(COLORS) + list(OBJECTS) + [f"{c} and {d}" for c in COLORS[:5] for d in COLORS[5:]] + \
        ["well-lit", "well lit", "don't know", "dont know", "left", "right", "daytime", "night"]


def variant(answer: str, rng: np.random.Generator) -> str:
    """A human's way of writing `answer`: case, punctuation, articles, spaces, number words."""
    kind = rng.integers(7)
    if kind == 0:
        return answer.capitalize()
    if kind == 1:
        return answer + rng.choice([".", "!", "?", " "])
    if kind == 2:
        return rng.choice(["a ", "the ", "an "]) + answer
    if kind == 3 and answer.isdigit() and int(answer) <= 10:
        return NUMBER_WORDS[int(answer)]
    if kind == 4:
        return answer.replace(" ", "-")
    if kind == 5:
        return f'"{answer}"'
    return " ".join(rng.choice(TAIL_WORDS, size=rng.integers(1, 4)))


def make_question(question_id: int, rng: np.random.Generator) -> tuple[dict, dict, str]:
    """One (question, annotation, predicted answer) with humans who sometimes disagree."""
    answer_type = rng.choice(["yes/no", "number", "other"], p=[0.376, 0.131, 0.493])
    head = common_answers(answer_type)
    modal = head[int(min(rng.zipf(1.6), len(head))) - 1]
    agreement = rng.choice([1.0, rng.uniform(0.3, 1.0)], p=[0.4, 0.6])
    humans = [modal if rng.random() < agreement else
              (variant(modal, rng) if rng.random() < 0.5 else rng.choice(head)) for _ in range(10)]
    roll = rng.random()
    prediction = modal if roll < 0.5 else variant(modal, rng) if roll < 0.65 else rng.choice(head)
    image_id = 1 + question_id % NUM_IMAGES
    question = {"image_id": image_id, "question_id": question_id, "question": f"Question {question_id}?"}
    annotation = {"question_id": question_id, "image_id": image_id, "answer_type": str(answer_type),
                  "question_type": QUESTION_TYPES[int(min(rng.zipf(1.3), len(QUESTION_TYPES))) - 1],
                  "multiple_choice_answer": modal,
                  "answers": [{"answer": str(a), "answer_confidence": "yes", "answer_id": i + 1}
                              for i, a in enumerate(humans)]}
    return question, annotation, str(prediction)


def make_split(num_questions: int, seed: int) -> tuple[list[dict], list[dict], list[dict]]:
    """Official question and annotation records of a synthetic split, with a results record each."""
    rng = np.random.default_rng(seed)
    questions, annotations, results = [], [], []
    for index in range(num_questions):
        question, annotation, prediction = make_question(1_000_000 + index * 7, rng)
        questions.append(question)
        annotations.append(annotation)
        results.append({"question_id": question["question_id"], "answer": prediction})
    return questions, annotations, results


def write_split(folder: Path, questions: list[dict], annotations: list[dict],
                results: list[dict]) -> tuple[Path, Path, Path]:
    """Write the official questions, annotations and results JSON files of a split."""
    paths = folder / "questions.json", folder / "annotations.json", folder / "results.json"
    contents = ({"data_subtype": "val2014", "questions": questions},
                {"data_subtype": "val2014", "annotations": annotations}, results)
    for path, content in zip(paths, contents):
        path.write_text(json.dumps(content))
    return paths


def write_model_inputs(folder: Path, questions: list[dict], annotations: list[dict], seed: int) -> dict[str, Path]:
    """What `vqa evaluate --model` reads: a prepared val split, a features file and an untrained MLP.

    Returns:
        {"data": prepared folder, "features": features HDF5, "model": model directory}.
    """
    from vqa.feature_file import FeaturesFile
    from vqa.prepared import SplitRecords, write_prepared

    rng = np.random.default_rng(seed)
    words = ["<pad>", "<oov>"] + [f"word{i}" for i in range(VOCABULARY_SIZE - 2)]
    answers = sorted({a["multiple_choice_answer"] for a in annotations}
                     | {f"answer {i}" for i in range(NUM_ANSWERS)})[:NUM_ANSWERS]
    paths = {"data": folder / "prepared", "features": folder / "features.h5", "model": folder / "mlp"}
    lengths = rng.integers(4, 12, size=len(questions)).astype(np.int32)
    token_ids = rng.integers(2, VOCABULARY_SIZE, size=(len(questions), artifacts.MAX_QUESTION_LENGTH), dtype=np.int32)
    token_ids[np.arange(artifacts.MAX_QUESTION_LENGTH) >= lengths[:, None]] = 0
    val = SplitRecords(
        artifacts.VAL_SPLIT, question_ids=np.array([q["question_id"] for q in questions], np.int64),
        image_ids=np.array([q["image_id"] for q in questions], np.int64), questions=[q["question"] for q in questions],
        token_ids=token_ids, lengths=lengths, question_types=[a["question_type"] for a in annotations],
        answer_types=[a["answer_type"] for a in annotations],
        modal_answers=[a["multiple_choice_answer"] for a in annotations],
        human_answers=[[h["answer"] for h in a["answers"]] for a in annotations],
        labels=np.full(len(questions), -1, np.int32))
    write_prepared(paths["data"], words=words, embeddings=np.zeros((len(words), artifacts.WORD_VECTOR_DIM), np.float32),
                   answers=answers, splits=[val], spacy_model="bench")
    features = np.maximum(rng.standard_normal((NUM_IMAGES, artifacts.IMAGE_FEATURE_DIM), dtype=np.float32), 0)
    FeaturesFile.write(paths["features"], features, np.arange(1, NUM_IMAGES + 1), source="noise", cnn_weights="")
    write_untrained_mlp(paths["model"], words=words, answers=answers, seed=seed)
    return paths


def write_untrained_mlp(folder: Path, *, words: list[str], answers: list[str], seed: int) -> None:
    """A model directory holding the tutorial's MLP (1024 x 3, tanh, dropout 0.5) with its initial weights."""
    import keras

    from vqa.models import build_mlp

    from vqa import modeldir
    from vqa.config import TrainConfig

    keras.utils.set_random_seed(seed)
    embeddings = np.random.default_rng(seed).standard_normal((len(words), artifacts.WORD_VECTOR_DIM), np.float32)
    model = build_mlp(embeddings=embeddings, num_answers=len(answers))
    config = modeldir.make_config(
        model="mlp", status="finished", train=dataclasses.asdict(TrainConfig.for_model("mlp", tutorial_recipe=True)),
        max_question_length=artifacts.MAX_QUESTION_LENGTH, spacy_model="bench", num_answers=len(answers),
        vocabulary_size=len(words), image_layout=artifacts.LAYOUT_VECTOR, image_size=artifacts.FC7_IMAGE_SIZE,
        image_feature_shape=[artifacts.IMAGE_FEATURE_DIM], cnn_weights=None, keras_version=keras.__version__)
    modeldir.save_model_dir(folder, model, config=config, words=words, answers=answers)


def time_model_path(paths: dict[str, Path], out: Path) -> float:
    """Wall seconds of one `python -m vqa evaluate --model ... --split val` process run from this tree."""
    command = [sys.executable, "-m", "vqa", "evaluate", "--model", str(paths["model"]), "--data", str(paths["data"]),
               "--features", str(paths["features"]), "--split", "val", "--results", str(out / "results.json"),
               "--report", str(out / "report.json")]
    out.mkdir(parents=True, exist_ok=True)
    return harness.run_command(command, env=harness.tree_env(), log=out / "log.txt")["seconds"]


def plain_loop(annotations: official.Annotations, predictions: list[str]) -> np.ndarray:
    """The official way: every question scored on its own, every answer normalised each time."""
    return np.array([metric.question_accuracy(humans, prediction)
                     for humans, prediction in zip(annotations.human_answers, predictions)])


def time_results_file(paths: tuple[Path, Path, Path], times: dict[str, list]) -> dict:
    """One run of the results-file path and of both scorers (which must agree); returns the report."""
    report, seconds = timed(evaluate.evaluate_results_file, *paths)
    times["results file"].append(seconds)
    annotations = official.load_annotations(paths[1])
    predictions = evaluate.load_results(paths[2], annotations.question_ids)
    fast, seconds = timed(metric.score_predictions, annotations.human_answers, predictions)
    times["score (cached, vectorised)"].append(seconds)
    plain, seconds = timed(plain_loop, annotations, predictions)
    times["score (plain loop)"].append(seconds)
    if fast.tolist() != plain.tolist():
        raise SystemExit("the plain loop and the vectorised scorer disagree")
    return report


def main(argv=None) -> None:
    global NUM_IMAGES  # --quick: a split about fewer images, so its features file stays small

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=214_354)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2,000 questions about 500 images, 1 run")
    parser.add_argument("--inputs", type=Path, default=None, metavar="DIR",
                        help="only write what `vqa evaluate --model` reads (prepared/, features.h5, mlp/) to DIR")
    parser.add_argument("--out", type=Path, default=harness.REPOSITORY / "bench" / "results_evaluate.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.questions, args.repeats, NUM_IMAGES = 2_000, 1, 500
    if args.inputs is not None:  # bench_compare times `vqa evaluate --model` on these with two trees
        args.inputs.mkdir(parents=True, exist_ok=True)
        records = make_split(args.questions, args.seed)
        write_model_inputs(args.inputs, records[0], records[1], args.seed)
        return
    times = {"results file": [], "score (cached, vectorised)": [], "score (plain loop)": [], "model": []}
    with tempfile.TemporaryDirectory() as folder:
        records = make_split(args.questions, args.seed)
        paths = write_split(Path(folder), *records)
        inputs = write_model_inputs(Path(folder), records[0], records[1], args.seed)
        for repeat in range(args.repeats):
            report = time_results_file(paths, times)
            times["model"].append(time_model_path(inputs, Path(folder) / f"model-{repeat}"))
    figures = {"questions": args.questions, "images": NUM_IMAGES, "overall": report["overall"],
               "seconds": {name: harness.Timing(tuple(values)).as_dict() for name, values in times.items()}}
    harness.write_results(args.out, figures)
    print("| step | median (s) | runs (s) |\n|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.2f} | {', '.join(f'{v:.2f}' for v in values)} |")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
