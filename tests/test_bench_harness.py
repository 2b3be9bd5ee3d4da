"""bench.harness: the shared benchmark plumbing records what it claims to."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench import harness


def test_repeat_times_each_run_and_skips_the_warmup():
    calls = []
    timing = harness.repeat(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(calls) == 5
    assert len(timing.runs) == 3
    assert timing.median == sorted(timing.runs)[1]
    assert set(timing.as_dict()) == {"median_s", "runs_s"}


def test_repeat_refuses_zero_repeats():
    with pytest.raises(ValueError, match="repeats"):
        harness.repeat(lambda: None, repeats=0)


def test_run_command_reports_the_child_memory_and_fails_loudly(tmp_path):
    result = harness.run_command([sys.executable, "-c", "x = bytearray(300_000_000); x[-1] = 1"])
    assert result["peak_rss_gb"] >= 0.3
    with pytest.raises(SystemExit, match="exit status 3"):
        harness.run_command([sys.executable, "-c", "raise SystemExit(3)"], log=tmp_path / "log.txt")


def test_write_results_records_command_date_commit_machine_and_figures(tmp_path):
    path = tmp_path / "results.json"
    harness.write_results(path, {"seconds": 1.5}, command=["python", "-m", "bench.x", "--n", "2"])
    record = json.loads(path.read_text())
    assert record["command"] == "python -m bench.x --n 2"
    assert record["figures"] == {"seconds": 1.5}
    assert len(record["git_commit"].split("-")[0]) == 40
    assert record["machine"]["cores"] >= 1 and len(record["machine"]["load_average"]) == 3
    assert "T" in record["date"]


def test_importing_the_harness_does_not_import_tensorflow():
    code = "import sys, bench.harness; print('tensorflow' in sys.modules)"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "False"
