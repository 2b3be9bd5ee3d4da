"""Before and after, side by side in one run: import time, training pipeline / in-memory, evaluate, serving.

    python -m bench.bench_compare --base d485efa [--rounds 2] [--out bench/results_compare.json]
    python -m bench.bench_compare --base HEAD --quick --measures import evaluate --out /tmp/compare.json

The base commit's tree is exported (``git archive``) to a temporary folder; both trees are then
measured through interfaces that do not change between them (``python -m vqa ...`` with each
tree's ``src/`` first on the path), alternating round by round (ABBA), so that a machine whose
speed drifts moves both alike. The data files are built once, by this tree (their formats do
not change):

* import: wall seconds of ``python -c "import vqa"`` and ``"import vqa.cli"`` (median of 10 interpreters);
* train: samples/s of ``vqa train --loss modal`` (every model, on a generated dataset; the
  second of 2 epochs, each a whole pass or ``--steps`` batches, from history.json) over the
  ceiling (the same run, its batches replayed from memory: ``bench.cached_train``), measured
  once with this tree; the base needs ``--loss`` (since d485efa);
* evaluate: wall seconds of ``vqa evaluate --model`` on 214,354 questions (bench_evaluate's inputs);
* serve: ``vqa serve`` of each tree (the SAN trained above, on a 64-pixel grid, so that VGG16 does
  not hide the server's own costs): p50 at 1 client and requests/s at 8 clients.

Each measure records before, after and after / before.
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

MEASURES = ("import", "train", "evaluate", "serve")
MODELS = ("mlp", "lstm", "san", "topdown")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="the commit to compare this tree with")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds per measure (default: 2)")
    p.add_argument("--measures", nargs="+", choices=MEASURES, default=list(MEASURES))
    p.add_argument("--questions", type=int, default=214_354, help="questions for `vqa evaluate --model`")
    p.add_argument("--images", type=int, default=800, help="generated scenes for training (default: 800)")
    p.add_argument("--steps", type=int, default=None, help="timed batches per `vqa train` (default: a pass)")
    p.add_argument("--requests", type=int, nargs=2, default=[6, 24], metavar=("R1", "R8"),
                   help="requests per round at 1 and 8 clients (default: 6 24)")
    p.add_argument("--quick", action="store_true", help="1 round on tiny data: 3 interpreters, 2,000 questions")
    p.add_argument("--out", type=Path, default=harness.REPOSITORY / "bench" / "results_compare.json")
    args = p.parse_args(argv)
    args.interpreters = 10
    if args.quick:
        args.rounds, args.questions, args.images, args.steps, args.requests = 1, 2_000, 80, 3, [2, 8]
        args.interpreters = 3
    return args


def export_tree(commit: str, folder: Path) -> Path:
    """``commit``'s files in ``folder`` (``git archive``: the checkout is left alone); its ``src/``."""
    folder.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(harness.REPOSITORY), "archive", "--format=tar", commit],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder / "src"


def alternate(trees: dict[str, Path], rounds: int, measure) -> dict[str, list]:
    """``measure(name, source)`` for both trees, ``rounds`` times, in ABBA order; the results per tree."""
    results = {name: [] for name in trees}
    for index in range(rounds):
        for name in list(trees) if index % 2 == 0 else list(reversed(trees)):
            results[name].append(measure(name, trees[name]))
    return results


def before_after(values: dict[str, list[float]], digits: int = 3) -> dict:
    """The median before and after, and after / before."""
    before, after = statistics.median(values["before"]), statistics.median(values["after"])
    return {"before": round(before, digits), "after": round(after, digits),
            "after_over_before": round(after / before, 3), "runs": values}


def import_seconds(source: Path, module: str, count: int) -> float:
    """Median wall seconds of ``python -c "import <module>"`` over ``count`` fresh interpreters."""
    def once() -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {module}"], env=harness.tree_env(source), check=True)
        return time.perf_counter() - start

    return statistics.median(once() for _ in range(count))


def compare_import(trees: dict[str, Path], args) -> dict:
    """Import seconds of ``vqa`` and ``vqa.cli`` per tree."""
    results = {}
    for module in ("vqa", "vqa.cli"):
        runs = alternate(trees, args.rounds, lambda name, src: round(import_seconds(src, module, args.interpreters), 4))
        results[module.replace(".", "_") + "_s"] = before_after(runs, digits=4)
    return results


def compare_train(trees: dict[str, Path], dataset, workdir: Path, args) -> dict:
    """pipeline / ceiling per model and tree; the ceiling (batches in memory) once, with this tree."""
    flags = ["--loss", "modal", *(["--batch-size", "32"] if args.quick else [])]
    models = ["san"] if args.quick else list(MODELS)
    results = {}
    for kind in models:
        def speed(name: str, source: Path, cached: bool = False) -> float:
            return round(harness.train_speed(kind, data=dataset.prepared, features=dataset.features_for(kind),
                                             out=workdir / f"{kind}_{name}", steps=args.steps, source=source,
                                             flags=flags, cached=cached), 1)

        pipeline = alternate(trees, args.rounds, speed)
        ceiling = speed("ceiling", trees["after"], cached=True)
        ratios = {name: [round(value / ceiling, 3) for value in values] for name, values in pipeline.items()}
        results[kind] = {"ceiling_samples_per_s": round(ceiling, 1),
                         "pipeline_samples_per_s": before_after(pipeline, digits=1),
                         "pipeline_vs_ceiling": before_after(ratios)}
        print(kind, results[kind]["pipeline_vs_ceiling"], flush=True)
    return results


def compare_evaluate(trees: dict[str, Path], workdir: Path, args) -> dict:
    """Wall seconds of `vqa evaluate --model` on bench_evaluate's inputs, per tree."""
    inputs = workdir / "evaluate"
    harness.run_command([sys.executable, "-m", "bench.bench_evaluate", "--questions", str(args.questions),
                         "--inputs", str(inputs)], env=harness.tree_env(), log=workdir / "evaluate_inputs.log")

    def seconds(name: str, source: Path) -> float:
        out = workdir / f"evaluate_{name}"
        out.mkdir(exist_ok=True)
        command = [sys.executable, "-m", "vqa", "evaluate", "--model", str(inputs / "mlp"), "--data",
                   str(inputs / "prepared"), "--features", str(inputs / "features.h5"), "--split", "val",
                   "--results", str(out / "results.json"), "--report", str(out / "report.json")]
        return harness.run_command(command, env=harness.tree_env(source), log=out / "log.txt")["seconds"]

    return {"questions": args.questions, "seconds": before_after(alternate(trees, args.rounds, seconds), digits=2)}


def compare_serve(trees: dict[str, Path], model_dir: Path, workdir: Path, args) -> dict:
    """p50 at 1 client and requests/s at 8 clients of each tree's `vqa serve`, both up, rounds alternating."""
    count = 2 * args.rounds * sum(args.requests) + 2
    fresh = [harness.jpeg(2000 + i, size=(320, 240)) for i in range(count)]
    servers = {name: harness.Server(model_dir, workdir / f"serve_{name}.log", source=source)
               for name, source in trees.items()}
    try:
        for server in servers.values():
            server.wait_ready(fresh.pop())
        one = alternate(trees, args.rounds, lambda name, _: harness.load(
            servers[name].url, [fresh.pop() for _ in range(args.requests[0])], clients=1)["p50_ms"])
        eight = alternate(trees, args.rounds, lambda name, _: harness.load(
            servers[name].url, [fresh.pop() for _ in range(args.requests[1])], clients=8)["requests_per_s"])
    finally:
        for server in servers.values():
            server.stop()
    return {"model": "san on a 64-pixel grid (2 x 2)", "p50_1_client_ms": before_after(one, digits=1),
            "requests_per_s_8_clients": before_after(eight)}


def main(argv=None) -> int:
    from vqa.sample_dataset import build_sample_dataset

    args = parse_args(argv)
    base = subprocess.run(["git", "-C", str(harness.REPOSITORY), "rev-parse", "--verify", f"{args.base}^{{commit}}"],
                          capture_output=True, text=True)
    if base.returncode:
        raise SystemExit(f"--base {args.base}: not a commit of this repository")
    figures = {"base_commit": base.stdout.strip(), "rounds": args.rounds}
    with tempfile.TemporaryDirectory(prefix="vqa-compare-") as tmp:
        workdir = Path(tmp)
        trees = {"before": export_tree(args.base, workdir / "base"), "after": harness.SOURCE}
        if "import" in args.measures:
            figures["import"] = compare_import(trees, args)
        if "evaluate" in args.measures:
            figures["evaluate_model"] = compare_evaluate(trees, workdir, args)
        if {"train", "serve"} & set(args.measures):
            dataset = build_sample_dataset(workdir / "data", num_images=args.images, features=("random", "grid"),
                                           grid_image_size=64)
            if "train" in args.measures:
                figures["train"] = compare_train(trees, dataset, workdir, args)
            if "serve" in args.measures:
                model_dir = workdir / "san_after"
                if not model_dir.is_dir():
                    harness.train_speed("san", data=dataset.prepared, features=dataset.features_for("san"),
                                        out=model_dir, steps=1, flags=["--batch-size", "32"])
                figures["serve"] = compare_serve(trees, model_dir, workdir, args)
    harness.write_results(args.out, figures)
    print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
