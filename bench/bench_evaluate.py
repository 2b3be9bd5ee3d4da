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

then checks that both give identical numbers. Prints a Markdown table (median of
`--repeats` runs).

    python bench/bench_evaluate.py [--questions 214354] [--repeats 3] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vqa import evaluate

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
    image_id = question_id // 10
    question = {"image_id": image_id, "question_id": question_id, "question": f"Question {question_id}?"}
    annotation = {"question_id": question_id, "image_id": image_id, "answer_type": str(answer_type),
                  "question_type": QUESTION_TYPES[int(min(rng.zipf(1.3), len(QUESTION_TYPES))) - 1],
                  "multiple_choice_answer": modal,
                  "answers": [{"answer": str(a), "answer_confidence": "yes", "answer_id": i + 1}
                              for i, a in enumerate(humans)]}
    return question, annotation, str(prediction)


def write_split(folder: Path, num_questions: int, seed: int) -> tuple[Path, Path, Path]:
    """Write official questions, annotations and results JSON files of a synthetic split."""
    rng = np.random.default_rng(seed)
    questions, annotations, results = [], [], []
    for index in tqdm(range(num_questions), desc="generating", unit="q"):
        question, annotation, prediction = make_question(1_000_000 + index * 7, rng)
        questions.append(question)
        annotations.append(annotation)
        results.append({"question_id": question["question_id"], "answer": prediction})
    paths = folder / "questions.json", folder / "annotations.json", folder / "results.json"
    contents = ({"data_subtype": "val2014", "questions": questions},
                {"data_subtype": "val2014", "annotations": annotations}, results)
    for path, content in zip(paths, contents):
        path.write_text(json.dumps(content))
    return paths


def plain_loop(annotations: evaluate.Annotations, predictions: list[str]) -> np.ndarray:
    """The official way: every question scored on its own, every answer normalised each time."""
    return np.array([evaluate.question_accuracy(humans, prediction)
                     for humans, prediction in zip(annotations.human_answers, predictions)])


def timed(function, *args, **kwargs):
    """(result, seconds) of one call."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=214_354)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        paths = write_split(Path(folder), args.questions, args.seed)
        times = {"end to end": [], "load": [], "score (cached, vectorised)": [], "score (plain loop)": []}
        for _ in tqdm(range(args.repeats), desc="runs"):
            report, seconds = timed(evaluate.evaluate_results_file, *paths)
            times["end to end"].append(seconds)
            (annotations, predictions), seconds = timed(load, paths)
            times["load"].append(seconds)
            fast, seconds = timed(evaluate.score_predictions, annotations.human_answers, predictions)
            times["score (cached, vectorised)"].append(seconds)
            plain, seconds = timed(plain_loop, annotations, predictions)
            times["score (plain loop)"].append(seconds)
            assert fast.tolist() == plain.tolist(), "per-question accuracies differ"
            plain_report = evaluate.summarize_accuracy(annotations.question_ids, plain,
                                                       question_types=annotations.question_types,
                                                       answer_types=annotations.answer_types)
            assert plain_report == report, "the plain loop and the vectorised scorer disagree"
    disagree = sum(len(set(map(evaluate.clean_answer, humans))) > 1 for humans in annotations.human_answers)
    distinct = len({answer for humans in annotations.human_answers for answer in humans} | set(predictions))
    print(f"\n{args.questions:,} questions ({disagree / args.questions:.0%} with disagreeing humans, "
          f"{distinct:,} distinct answer strings), overall {report['overall']:.2f}, "
          f"per answer type {report['perAnswerType']}; identical numbers: yes")
    print(f"Machine: {cpu_model()}, {len(Path('/proc/cpuinfo').read_text().split('processor')) - 1} cores\n")
    print("| step | median of %d (s) | runs (s) |\n|---|---|---|" % args.repeats)
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.2f} | {', '.join(f'{v:.2f}' for v in values)} |")


def load(paths: tuple[Path, Path, Path]) -> tuple[evaluate.Annotations, list[str]]:
    """Load annotations and results as `evaluate_results_file` does."""
    annotations = evaluate.load_annotations(paths[1])
    return annotations, evaluate.load_results(paths[2], annotations.question_ids)


if __name__ == "__main__":
    main()
