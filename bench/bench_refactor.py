"""Before and after a refactor, side by side in one run: import time, training pipeline / in-memory, evaluate.

The library of a base commit (checked out into a temporary git worktree) and this tree's
library are measured in alternation, round by round, by the same benchmark scripts (this
tree's ``bench/``), so that a machine whose speed drifts moves both alike:

* ``import vqa.cli`` wall time in a fresh interpreter, and whether ``vqa --help`` or
  ``vqa evaluate`` on a results file imports TensorFlow (they must not);
* the training pipeline / in-memory ratio of the MLP and the LSTM (``bench.bench_train``,
  without the tutorial's spaCy baseline);
* ``vqa evaluate --model`` wall time on a generated val-sized split (``bench.bench_evaluate
  --baseline-src``, which already alternates the two trees).

    python -m bench.bench_refactor --base d16d015 --out bench/results_refactor.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import harness

TENSORFLOW_PROBE = ("import sys, vqa.cli\n"
                    "try:\n    vqa.cli.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
                    "print('tensorflow' in sys.modules)")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="the commit before the change")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (medians over them)")
    p.add_argument("--import-repeats", type=int, default=5, help="interpreter starts per tree and round")
    p.add_argument("--questions", type=int, default=214_354, help="questions for `vqa evaluate --model`")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--skip-evaluate", action="store_true")
    p.add_argument("--out", type=Path, default=Path("bench/results_refactor.json"))
    return p.parse_args(argv)


def base_tree(commit: str, folder: Path) -> Path:
    """A detached worktree of ``commit`` in ``folder``; its ``src/``."""
    subprocess.run(["git", "-C", str(harness.REPOSITORY), "worktree", "add", "--detach", str(folder), commit],
                   check=True, capture_output=True)
    return folder / "src"


def library_env(source: Path) -> dict:
    """This environment with the library from ``source`` (a ``src/``) and this tree's ``bench`` package."""
    return harness.tree_env(source, PYTHONPATH=f"{Path(source).resolve()}:{harness.REPOSITORY}")


def import_seconds(source: Path, repeats: int) -> list[float]:
    """Wall seconds of ``python -c 'import vqa.cli'`` with ``source`` first on the path."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import vqa.cli"], env=library_env(source), check=True)
        times.append(time.perf_counter() - start)
    return times


def imports_tensorflow(source: Path, argv: list[str]) -> bool:
    """Whether ``vqa <argv>`` imports TensorFlow in a fresh interpreter with ``source``'s library."""
    out = subprocess.run([sys.executable, "-c", TENSORFLOW_PROBE, *argv], env=library_env(source),
                         capture_output=True, text=True, check=True).stdout
    return out.strip().splitlines()[-1] == "True"


def evaluate_arguments(folder: Path) -> list[str]:
    """A tiny official questions/annotations/results triple: `vqa evaluate` on a results file."""
    questions = {"questions": [{"image_id": 1, "question": "What?", "question_id": 10}]}
    annotations = {"annotations": [{"question_id": 10, "image_id": 1, "question_type": "what",
                                    "answer_type": "other", "multiple_choice_answer": "a",
                                    "answers": [{"answer": "a", "answer_confidence": "yes", "answer_id": i}
                                                for i in range(1, 11)]}]}
    paths = {name: folder / f"{name}.json" for name in ("questions", "annotations", "results")}
    for name, content in (("questions", questions), ("annotations", annotations),
                          ("results", [{"question_id": 10, "answer": "a"}])):
        paths[name].write_text(json.dumps(content))
    return ["evaluate", "--questions", str(paths["questions"]), "--annotations", str(paths["annotations"]),
            "--results", str(paths["results"])]


def train_ratios(source: Path, folder: Path) -> dict:
    """pipeline / in-memory samples/s of the MLP and the LSTM, measured by bench.bench_train with ``source``."""
    out = folder / "train.json"
    subprocess.run([sys.executable, "-m", "bench.bench_train", "--skip-tutorial", "--repeats", "3",
                    "--out", str(out)], env=library_env(source), check=True, cwd=harness.REPOSITORY,
                   capture_output=True)
    figures = json.loads(out.read_text())["figures"]
    return {model: figures[model]["pipeline_vs_ceiling"] for model in ("mlp", "lstm") if model in figures}


def evaluate_times(base_source: Path, folder: Path, questions: int, rounds: int) -> dict:
    """``vqa evaluate --model`` seconds for both trees, alternated by bench.bench_evaluate itself."""
    out = folder / "evaluate.json"
    subprocess.run([sys.executable, "-m", "bench.bench_evaluate", "--questions", str(questions), "--repeats",
                    str(rounds), "--baseline-src", str(base_source), "--out", str(out)],
                   env=harness.tree_env(), check=True, cwd=harness.REPOSITORY, capture_output=True)
    return json.loads(out.read_text())["figures"]


def main(argv=None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vqa-refactor-") as tmp:
        tmp = Path(tmp)
        trees = {"before": base_tree(args.base, tmp / "base"), "after": harness.SOURCE}
        probe = evaluate_arguments(tmp)
        figures = {"base_commit": args.base, "import_seconds": {k: [] for k in trees},
                   "imports_tensorflow": {name: {"--help": imports_tensorflow(src, ["--help"]),
                                                 "evaluate a results file": imports_tensorflow(src, probe)}
                                          for name, src in trees.items()},
                   "pipeline_over_ceiling": {k: [] for k in trees}}
        for round_ in range(args.rounds):
            for name, source in trees.items():
                figures["import_seconds"][name] += import_seconds(source, args.import_repeats)
                if not args.skip_train:
                    figures["pipeline_over_ceiling"][name].append(train_ratios(source, tmp))
                print(f"round {round_ + 1}/{args.rounds}: {name} done", flush=True)
                harness.write_results(args.out, figures)
        figures["import_seconds_median"] = {k: round(statistics.median(v), 3) for k, v in
                                            figures["import_seconds"].items()}
        if not args.skip_evaluate:
            figures["evaluate_model"] = evaluate_times(trees["before"], tmp, args.questions, args.rounds)
        subprocess.run(["git", "-C", str(harness.REPOSITORY), "worktree", "remove", "--force", str(tmp / "base")],
                       check=False, capture_output=True)
    harness.write_results(args.out, figures)
    print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
