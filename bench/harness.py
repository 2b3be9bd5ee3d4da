"""Shared plumbing for the benchmarks: machine, timing, memory, load and the results file.

Every script in bench/ measures with these helpers and records what it measured in one
JSON results file, so that each figure in README.md and docs/ can be traced to the
command, date, commit and machine that produced it.

How to run a benchmark: from the repository root, as a module of the ``bench`` package
(no ``sys.path`` edits; ``python -m`` puts the current folder on the path, and the
``vqa`` package comes from the installed project or from ``PYTHONPATH=src``)::

    python -m bench.bench_prepare --scale 0.05 --repeats 1
    python -m bench.bench_train --help

The API, small on purpose:

- ``machine()``: CPU model, cores, RAM, GPU (``nvidia-smi``, if any), load average, Python.
- ``load_average()``: the 1, 5 and 15-minute load averages.
- ``peak_rss_gb()``: peak resident memory of this process (or of its waited-for children);
  ``cpu_seconds()``: this process's CPU time, which other load on the machine barely moves.
- ``repeat(function, repeats=3, warmup=0)``: run a callable several times -> ``Timing``
  (``.runs``, ``.median``, ``.as_dict()``).
- ``timed(function, *args)``: one call -> ``(result, seconds)``, for loops that keep results.
- ``run_command(command)``: one subprocess, its wall seconds and its own peak RSS.
- ``tree_env(source)``: an environment whose ``vqa`` imports come from a given ``src/``.
- ``results_record(figures)`` / ``write_results(path, figures)``: the results file
  ``{"command", "date", "git_commit", "machine", "figures"}``, written atomically; a
  script that saves as it goes calls ``write_results`` again with the grown figures.

The machine, load, memory and commit helpers are `vqa.provenance`'s, re-exported here, so
that `vqa demo` and the benchmarks record the same things. Importing this module is light:
it does not import TensorFlow or Keras.
"""

from __future__ import annotations

import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vqa import provenance
from vqa.atomic import write_json_atomically
# The machine, load, memory and commit helpers live in the library (`vqa demo` records them too).
from vqa.provenance import (cpu_model, cpu_seconds, git_commit, gpus, load_average, machine,  # noqa: F401
                            memory_gb, peak_rss_gb)

REPOSITORY = Path(__file__).resolve().parents[1]
SOURCE = REPOSITORY / "src"


@dataclass(frozen=True)
class Timing:
    """Wall seconds of repeated runs of one thing; the median is the figure to quote."""

    runs: tuple[float, ...]

    @property
    def median(self) -> float:
        """The median of the runs, in seconds."""
        return statistics.median(self.runs)

    def as_dict(self, digits: int = 3) -> dict:
        """``{"median_s", "runs_s"}`` rounded for a results file."""
        return {"median_s": round(self.median, digits), "runs_s": [round(run, digits) for run in self.runs]}


def repeat(function: Callable[[], object], *, repeats: int = 3, warmup: int = 0) -> Timing:
    """Call ``function()`` ``warmup`` times untimed, then ``repeats`` times timed.

    Returns:
        Timing whose ``runs`` are the wall seconds of the timed calls.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    for _ in range(warmup):
        function()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        runs.append(time.perf_counter() - start)
    return Timing(tuple(runs))


def timed(function: Callable, *args, **kwargs) -> tuple[object, float]:
    """Call ``function(*args, **kwargs)`` once; returns ``(its result, wall seconds)``."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def tree_env(source: Path = SOURCE, **extra: str) -> dict[str, str]:
    """This environment with ``source`` (a ``src/`` folder) and its parent first on PYTHONPATH.

    A child ``python -m vqa`` then runs that tree's code, not an installed copy; comparing
    two trees (``--baseline-src``) passes each one's ``src/``.
    """
    paths = [str(Path(source).resolve()), str(Path(source).resolve().parent)]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), **extra}


def run_command(command: Sequence[str], *, env: dict | None = None, log: Path | None = None) -> dict:
    """Run one command to its end; its wall seconds and its own peak RSS (GB).

    Output goes to ``log`` (stdout and stderr together) or is discarded. A failing command
    raises SystemExit naming it, since a benchmark of a failed run means nothing. Linux
    counts the pages a child shares with this process at the fork, so keep the parent small.
    """
    with open(log, "w") if log is not None else open(os.devnull, "w") as sink:
        start = time.perf_counter()
        process = subprocess.Popen(list(command), stdout=sink, stderr=subprocess.STDOUT, env=env)
        # wait4 gives this child's own rusage, not the maximum over every child so far.
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code:
        where = f"; see {log}" if log is not None else ""
        raise SystemExit(f"{shlex.join(command)}: failed with exit status {code}{where}")
    return {"seconds": round(seconds, 2), "peak_rss_gb": round(usage.ru_maxrss * 1024 / 1e9, 2)}


def results_record(figures: dict, *, command: Sequence[str] | None = None) -> dict:
    """The results-file record: command line (this script's by default), UTC date, git commit, machine, ``figures``."""
    text = shlex.join(command) if command is not None else " ".join([_invocation(), *map(shlex.quote, sys.argv[1:])])
    return provenance.results_record(figures, command=text)


def write_results(path: Path, figures: dict, *, command: Sequence[str] | None = None) -> dict:
    """Write ``results_record(figures)`` to ``path`` as indented JSON, atomically; returns the record."""
    record = results_record(figures, command=command)
    write_json_atomically(Path(path), record, indent=2)
    return record


def _invocation() -> str:
    """How the running script was started: ``python -m bench.bench_x``, or ``python PATH``."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:
        return f"python -m {spec.name}"
    return f"python {sys.argv[0]}"
