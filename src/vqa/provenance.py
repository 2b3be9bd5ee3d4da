"""Where a measurement came from: the machine, its load, the git commit, peak memory, the results record.

One home for what every results file records (`vqa demo`'s and the benchmarks' through
``bench.harness``): ``{"command", "date", "git_commit", "machine", "figures"}``, so that a
figure quoted in the docs can be traced to the run that measured it. Light: no TensorFlow.

The date, the commit and the first load average are read when the run starts (``begin()``,
once per process), not when the file is written: a tree edited while a long run goes on
would otherwise record a commit, or a ``-dirty`` mark, that the run never measured. The
machine's load average is recorded at both ends (``load_average_start``, ``load_average_end``).
"""

from __future__ import annotations

import datetime
import functools
import importlib.metadata
import json
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path

# The checkout this module runs from (src/vqa/ -> the repository root), for the git commit.
REPOSITORY = Path(__file__).resolve().parents[2]


def load_average() -> list[float]:
    """The 1, 5 and 15-minute load averages, rounded to 0.01 (the machine may be shared)."""
    return [round(value, 2) for value in os.getloadavg()]


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, or what ``platform`` knows elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gb() -> float | None:
    """Total RAM in GB (10^9 bytes) from /proc/meminfo; None where there is none."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) * 1024 / 1e9, 1)
    except OSError:
        pass
    return None


def gpus() -> list[str]:
    """The GPUs ``nvidia-smi`` lists ("name, memory"); empty without one (no TensorFlow import)."""
    try:
        listing = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in listing.stdout.splitlines() if line.strip()] if listing.returncode == 0 else []


def keras_version() -> dict:
    """Keras' version and backend, without importing Keras (its backend as Keras would choose it)."""
    try:
        version = importlib.metadata.version("keras")
    except importlib.metadata.PackageNotFoundError:
        return {"keras": None, "backend": None}
    if "keras" in sys.modules:
        return {"keras": version, "backend": sys.modules["keras"].backend.backend()}
    backend = os.environ.get("KERAS_BACKEND")
    if not backend:
        home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
        try:
            backend = json.loads((home / "keras.json").read_text()).get("backend")
        except (OSError, ValueError):
            backend = None
    return {"keras": version, "backend": backend or "tensorflow"}


def machine() -> dict:
    """Describe this machine: CPU model, cores, RAM, GPUs, OS, Python, Keras and its backend (load: see begin)."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "memory_gb": memory_gb(), "gpus": gpus(),
            "platform": platform.platform(), "python": platform.python_version(), **keras_version()}


def peak_rss_gb(*, children: bool = False) -> float:
    """Peak resident memory in GB: of this process, or (``children=True``) the largest waited-for child.

    Linux reports ``ru_maxrss`` in KiB; the figure is in 10^9 bytes, rounded to 0.01.
    """
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return round(resource.getrusage(who).ru_maxrss * 1024 / 1e9, 2)


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far: unlike wall time, barely moved by other load."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return round(usage.ru_utime + usage.ru_stime, 1)


def seconds_since_start() -> float | None:
    """Wall seconds since this process started, imports included (Linux /proc); None elsewhere."""
    try:
        after_name = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start_ticks = int(after_name[19])  # field 22, starttime, in clock ticks after boot
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return round(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 1)


def git_commit(repository: Path = REPOSITORY) -> str:
    """The checkout's HEAD commit, ``-dirty`` when tracked files changed; "unknown" outside a checkout."""
    def git(*arguments: str) -> str:
        return subprocess.run(["git", *arguments], cwd=repository, capture_output=True, text=True).stdout.strip()

    try:
        commit = git("rev-parse", "--verify", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except OSError:  # no git
        return "unknown"
    if not commit:
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def run_start(repository: Path = REPOSITORY) -> dict:
    """What a run records about its start: the UTC date, the git commit and the load average, read now."""
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "git_commit": git_commit(repository), "load_average": load_average()}


@functools.cache
def begin() -> dict:
    """This process's run start (``run_start()``), read on the first call and the same on every later one.

    A benchmark calls it first thing (``bench.harness`` does at import), `vqa demo` when it starts.
    """
    return run_start()


def results_record(figures: dict, *, command: str, start: dict | None = None) -> dict:
    """A results file's content: command, date and commit at the start, the machine with its load, ``figures``.

    Args:
        figures: what the run measured.
        command: the command line that reproduces the run.
        start: a ``run_start()`` record; by default this process's ``begin()``.
    """
    start = start or begin()
    return {"command": command, "date": start["date"], "git_commit": start["git_commit"],
            "machine": {**machine(), "load_average_start": start["load_average"],
                        "load_average_end": load_average()},
            "figures": figures}
