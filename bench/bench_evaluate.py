"""Benchmark `vqa evaluate` on a VQA-v2-val-sized synthetic split (run by hand, not a test).

Generates 214,354 questions with 10 human answers each (a realistic answer mix:
yes/no, numbers written as digits and words, articles, punctuation and case
variants, a long tail of rare answers, humans that disagree), writes the official
questions / annotations / results JSON files, and times:

* `evaluate_results_file` end to end (JSON loading + cached, vectorised scoring);
* the scoring step alone (`score_predictions`);
* a plain per-question loop over the same rules with no caching
  (`question_accuracy` on every question, normalising every answer each time,
  as the official VQAEval does);

then checks that both give identical numbers; and times

* `vqa evaluate --model` end to end, in a fresh process (as a user runs it): the same
  split written as a prepared ``vqa_data.h5``, an MLP at the tutorial's sizes
  (1000 answers, 3 x 1024 tanh) with untrained weights, a features file of random
  fc7 vectors for the split's 40,504 image ids; it reads the split, predicts every
  question, writes the results file, scores it and writes the reports.

Prints a Markdown table (median of `--repeats` runs) and writes the figures to
bench/results_evaluate.json (``--out``; bench.harness's record). ``--baseline-src DIR`` also
times the model path with another source tree first on ``PYTHONPATH`` (e.g. an
export of an older commit), alternating with this one, for a side-by-side ratio.

    python -m bench.bench_evaluate [--questions 214354] [--repeats 3] [--seed 0] [--baseline-src DIR]
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
from tqdm import tqdm

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
    for index in tqdm(range(num_questions), desc="generating", unit="q"):
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


def time_model_path(paths: dict[str, Path], out: Path, *, source: Path) -> float:
    """Wall seconds of one `python -m vqa evaluate --model ... --split val` process run from ``source``."""
    command = [sys.executable, "-m", "vqa", "evaluate", "--model", str(paths["model"]), "--data", str(paths["data"]),
               "--features", str(paths["features"]), "--split", "val", "--results", str(out / "results.json"),
               "--report", str(out / "report.json")]
    out.mkdir(parents=True, exist_ok=True)
    run = harness.run_command(command, env=harness.tree_env(source, TF_CPP_MIN_LOG_LEVEL="3"), log=out / "log.txt")
    return run["seconds"]


def plain_loop(annotations: official.Annotations, predictions: list[str]) -> np.ndarray:
    """The official way: every question scored on its own, every answer normalised each time."""
    return np.array([metric.question_accuracy(humans, prediction)
                     for humans, prediction in zip(annotations.human_answers, predictions)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=214_354)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline-src", type=Path, default=None,
                        help="also time `vqa evaluate --model` with this src/ folder first on PYTHONPATH")
    parser.add_argument("--skip-model", action="store_true", help="time the results-file path only")
    parser.add_argument("--out", type=Path, default=Path("bench/results_evaluate.json"), help="results file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        records = make_split(args.questions, args.seed)
        paths = write_split(Path(folder), *records)
        times = {"end to end": [], "load": [], "score (cached, vectorised)": [], "score (plain loop)": []}
        for _ in tqdm(range(args.repeats), desc="runs"):
            report, seconds = timed(evaluate.evaluate_results_file, *paths)
            times["end to end"].append(seconds)
            (annotations, predictions), seconds = timed(load, paths)
            times["load"].append(seconds)
            fast, seconds = timed(metric.score_predictions, annotations.human_answers, predictions)
            times["score (cached, vectorised)"].append(seconds)
            plain, seconds = timed(plain_loop, annotations, predictions)
            times["score (plain loop)"].append(seconds)
            assert fast.tolist() == plain.tolist(), "per-question accuracies differ"
            plain_report = metric.summarize_accuracy(annotations.question_ids, plain,
                                                     question_types=annotations.question_types,
                                                     answer_types=annotations.answer_types)
            assert plain_report == report, "the plain loop and the vectorised scorer disagree"
        if not args.skip_model:
            times.update(time_model_paths(Path(folder), records, args))
    disagree = sum(len(set(map(metric.clean_answer, humans))) > 1 for humans in annotations.human_answers)
    distinct = len({answer for humans in annotations.human_answers for answer in humans} | set(predictions))
    print(f"\n{args.questions:,} questions ({disagree / args.questions:.0%} with disagreeing humans, "
          f"{distinct:,} distinct answer strings), overall {report['overall']:.2f}, "
          f"per answer type {report['perAnswerType']}; identical numbers: yes")
    figures = {"questions": args.questions, "overall": report["overall"], "disagreeing_humans": disagree,
               "distinct_answers": distinct,
               "seconds": {name: {"median_s": round(statistics.median(values), 3),
                                  "runs_s": [round(value, 3) for value in values]} for name, values in times.items()}}
    record = harness.write_results(args.out, figures)
    machine = record["machine"]
    print(f"Machine: {machine['cpu']}, {machine['cores']} cores, load average {machine['load_average'][0]:.1f} "
          f"at the end; figures in {args.out}\n")
    print("| step | median of %d (s) | runs (s) |\n|---|---|---|" % args.repeats)
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.2f} | {', '.join(f'{v:.2f}' for v in values)} |")


def time_model_paths(folder: Path, records: tuple[list[dict], list[dict], list[dict]], args) -> dict[str, list]:
    """Time `vqa evaluate --model` (and the baseline source tree's, alternating) ``args.repeats`` times."""
    inputs = write_model_inputs(folder, records[0], records[1], args.seed)
    sources = {"vqa evaluate --model (this tree)": harness.SOURCE}
    if args.baseline_src is not None:
        sources["vqa evaluate --model (baseline tree)"] = args.baseline_src.resolve()
    times: dict[str, list] = {name: [] for name in sources}
    for repeat in tqdm(range(args.repeats), desc="model path"):
        for name, source in sources.items():
            out = folder / f"model-{len(times[name])}-{name.split('(')[1][:4]}"
            times[name].append(time_model_path(inputs, out, source=source))
    report = json.loads((out / "report.json").read_text())
    print(f"model path: {report['overall']:.2f} overall (untrained MLP), "
          f"{len(json.loads((out / 'results.json').read_text())):,} answers written")
    return times


def load(paths: tuple[Path, Path, Path]) -> tuple[official.Annotations, list[str]]:
    """Load annotations and results as `evaluate_results_file` does."""
    annotations = official.load_annotations(paths[1])
    return annotations, evaluate.load_results(paths[2], annotations.question_ids)


if __name__ == "__main__":
    main()
