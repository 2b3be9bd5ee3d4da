"""Every kept benchmark runs: its quick mode writes a results file with provenance and the figures the docs cite.

Slow tier: each script runs as ``python -m bench.<script> --quick --out TMP`` in a fresh process
from this tree, so a benchmark that rots (an import, a flag, a library call that moved) fails
CI instead of the next person who reruns it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]

# script -> (extra arguments, figure keys the docs cite or the script's table needs)
SCRIPTS = {
    "bench_tests": ([], {"fast"}),
    "bench_prepare": ([], {"scale", "questions", "median_s", "peak_rss_gb"}),
    "bench_grid_features": ([], {"images", "coco2014_images", "results"}),
    "bench_evaluate": ([], {"questions", "overall", "seconds"}),
    "bench_train": ([], {"san", "input_scaling"}),  # san holds soft_over_modal too
    "bench_attention": ([], {"scenes", "seeds", "questions", "question_only", "lstm", "san", "topdown", "lead"}),
    "bench_loss": ([], {"settings", "disagree", "relations", "real"}),
    "bench_serving": ([], {"server", "in_process", "follow_up", "ratios"}),
    "bench_ops": ([], {"pack_open", "verify", "swap", "burst"}),
    "bench_compare": (["--base", "HEAD", "--measures", "import", "evaluate"], {"base_commit", "import",
                                                                             "evaluate_model"}),
}


def test_every_script_in_bench_is_run_here():
    scripts = {path.stem for path in (REPOSITORY / "bench").glob("bench_*.py")}
    assert scripts == set(SCRIPTS)


def test_no_bench_script_imports_another():
    for path in (REPOSITORY / "bench").glob("*.py"):
        for line in path.read_text().splitlines():
            assert not line.startswith(("from bench.bench_", "import bench.bench_")), f"{path.name}: {line}"
            assert not (line.startswith("from bench import") and "bench_" in line), f"{path.name}: {line}"


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_the_quick_mode_writes_provenance_and_figures(script, tmp_path):
    arguments, keys = SCRIPTS[script]
    out = tmp_path / "results.json"
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPOSITORY / "src"), str(REPOSITORY)]),
                   "TF_CPP_MIN_LOG_LEVEL": "3"}
    if script == "bench_tests":
        arguments = [*arguments, "--logs", str(tmp_path)]
    run = subprocess.run([sys.executable, "-m", f"bench.{script}", "--quick", "--out", str(out), *arguments],
                         cwd=REPOSITORY, env=environment, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["command"].startswith(f"python -m bench.{script} --quick")
    assert "T" in record["date"] and len(record["git_commit"].split("-")[0]) == 40
    machine = record["machine"]
    assert machine["cores"] >= 1 and machine["keras"] and machine["backend"]
    assert len(machine["load_average_start"]) == len(machine["load_average_end"]) == 3
    assert keys <= set(record["figures"]), sorted(keys - set(record["figures"]))
