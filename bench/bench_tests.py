"""Time the test tiers: `python -m pytest -m "not slow"` (the daily loop) and `python -m pytest` (CI).

    python -m bench.bench_tests [--tier fast|full|both] [--out bench/results_tests.json]
    python -m bench.bench_tests --quick --out /tmp/tests.json   # the fast tier of one small test file

Each tier runs in a fresh ``python -m pytest`` process from this tree, on a machine doing
nothing else; per tier the results file holds the wall and CPU seconds (user + system of
pytest and its children, which other load moves much less) and pytest's counts.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from bench.harness import REPOSITORY, tree_env, write_results

TIERS = {"fast": ["-m", "not slow"], "full": []}
QUICK_TESTS = ["tests/test_bench_harness.py"]
COUNTS = re.compile(r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|xpassed)")


def run_tier(name: str, log: Path, tests: list[str]) -> dict:
    """Run one tier to its end: wall and CPU seconds, pytest's counts and summary line."""
    arguments = [*TIERS[name], *tests]
    command = [sys.executable, "-m", "pytest", *arguments, "-q", "-p", "no:cacheprovider"]
    with open(log, "w") as sink:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=REPOSITORY, env=tree_env(), stdout=sink, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)  # its children (servers, clusters) once reaped
        seconds = time.perf_counter() - start
    lines = log.read_text().strip().splitlines()
    summary = lines[-1].strip("= ") if lines else ""
    return {"command": shlex.join(["python", "-m", "pytest", *arguments]),
            "exit_status": os.waitstatus_to_exitcode(status), "wall_s": round(seconds, 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "counts": {kind: int(n) for n, kind in COUNTS.findall(summary)}, "summary": summary}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tier", choices=["fast", "full", "both"], default="both")
    parser.add_argument("--quick", action="store_true", help="the fast tier of one small test file only")
    parser.add_argument("--out", type=Path, default=REPOSITORY / "bench" / "results_tests.json")
    parser.add_argument("--logs", type=Path, default=REPOSITORY / "bench" / "out", help="pytest output per tier")
    args = parser.parse_args(argv)
    args.logs.mkdir(parents=True, exist_ok=True)
    tiers = ["fast"] if args.quick else ["fast", "full"] if args.tier == "both" else [args.tier]
    figures = {}
    for name in tiers:
        figures[name] = run = run_tier(name, args.logs / f"tests_{name}.log", QUICK_TESTS if args.quick else [])
        print(f"{run['command']}: {run['wall_s']} s wall, {run['cpu_s']} s CPU, {run['summary']}", file=sys.stderr)
    write_results(args.out, figures)  # at the end: the docs' own test reads this file during the full tier
    return 0 if all(run["exit_status"] == 0 for run in figures.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
