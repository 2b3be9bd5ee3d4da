"""Time the test tiers: `python -m pytest -m "not slow"` (the daily loop) and `python -m pytest` (CI).

Run from the repository root, on a machine doing nothing else (another job lengthens the wall
time; the CPU seconds much less, which is why both are recorded, with the load average):

    python -m bench.bench_tests [--tier fast|full|both] [--out bench/results_tests.json]

Each tier runs in a fresh ``python -m pytest`` process from this tree; the results file
(bench.harness: command, date, git commit, machine) holds per tier the wall and CPU seconds
(user + system of pytest and its children), pytest's counts and the load average around it.
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

from bench.harness import REPOSITORY, load_average, tree_env, write_results

TIERS = {"fast": ["-m", "not slow"], "full": []}
COUNTS = re.compile(r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|xpassed)")


def run_tier(name: str, log: Path) -> dict:
    """Run one tier to its end: wall and CPU seconds, pytest's counts, load average before and after."""
    command = [sys.executable, "-m", "pytest", *TIERS[name], "-q", "-p", "no:cacheprovider"]
    before = load_average()
    with open(log, "w") as sink:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=REPOSITORY, env=tree_env(), stdout=sink, stderr=subprocess.STDOUT)
        # wait4: this run's own CPU time, its children (servers, clusters) included once they are reaped
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
    lines = log.read_text().strip().splitlines()
    summary = lines[-1].strip("= ") if lines else ""
    return {"command": shlex.join(["python", "-m", "pytest", *TIERS[name]]),
            "exit_status": os.waitstatus_to_exitcode(status), "wall_s": round(seconds, 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "counts": {kind: int(n) for n, kind in COUNTS.findall(summary)}, "summary": summary,
            "load_average_before": before, "load_average_after": load_average()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tier", choices=["fast", "full", "both"], default="both")
    parser.add_argument("--out", type=Path, default=REPOSITORY / "bench" / "results_tests.json")
    parser.add_argument("--logs", type=Path, default=REPOSITORY / "bench" / "out", help="pytest output per tier")
    args = parser.parse_args(argv)
    args.logs.mkdir(parents=True, exist_ok=True)
    figures = {}
    for name in ["fast", "full"] if args.tier == "both" else [args.tier]:
        figures[name] = run = run_tier(name, args.logs / f"tests_{name}.log")
        print(f"{run['command']}: {run['wall_s']} s wall, {run['cpu_s']} s CPU, {run['summary']}; "
              f"load {run['load_average_before'][0]} -> {run['load_average_after'][0]}", file=sys.stderr)
        write_results(args.out, figures)  # saved as it goes: the full tier takes minutes
    return 0 if all(run["exit_status"] == 0 for run in figures.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
