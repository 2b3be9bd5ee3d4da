"""bench.harness and vqa.provenance: the shared benchmark plumbing records what it claims to."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench import harness
from vqa import provenance


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
    assert record["machine"]["cores"] >= 1 and record["machine"]["keras"]
    assert len(record["machine"]["load_average_start"]) == len(record["machine"]["load_average_end"]) == 3
    assert "T" in record["date"]


def test_the_date_commit_and_first_load_are_those_of_the_run_start(tmp_path):
    record = harness.write_results(tmp_path / "results.json", {})
    assert (record["date"], record["git_commit"]) == (harness.START["date"], harness.START["git_commit"])
    assert record["machine"]["load_average_start"] == harness.START["load_average"]
    assert provenance.begin() is harness.START  # one start per process


def git(folder, *arguments):
    subprocess.run(["git", "-C", str(folder), *arguments], check=True, capture_output=True)


@pytest.fixture
def repository(tmp_path):
    """A git repository with one committed file."""
    git(tmp_path, "init", "-q")
    (tmp_path / "tracked.txt").write_text("one\n")
    git(tmp_path, "add", "tracked.txt")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    return tmp_path


def test_the_commit_read_at_the_start_stays_clean_when_the_tree_changes_later(repository):
    start = provenance.run_start(repository)
    (repository / "tracked.txt").write_text("edited while the run goes on\n")
    record = provenance.results_record({}, command="x", start=start)
    assert len(record["git_commit"]) == 40 and not record["git_commit"].endswith("-dirty")
    assert provenance.git_commit(repository).endswith("-dirty")


def test_a_tree_with_uncommitted_tracked_changes_is_marked_dirty_and_untracked_files_are_not(repository):
    (repository / "untracked.txt").write_text("new\n")
    assert not provenance.run_start(repository)["git_commit"].endswith("-dirty")
    (repository / "tracked.txt").write_text("two\n")
    assert provenance.run_start(repository)["git_commit"].endswith("-dirty")


def test_outside_a_checkout_the_commit_is_unknown(tmp_path):
    assert provenance.git_commit(tmp_path) == "unknown"


def test_importing_the_harness_does_not_import_tensorflow():
    code = "import sys, bench.harness; print('tensorflow' in sys.modules)"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "False"


def test_the_latency_summary_uses_nearest_ranks_and_the_wall_time():
    summary = harness.latency([0.1, 0.2, 0.3, 0.4], wall=2.0)
    assert summary == {"n": 4, "p50_ms": 250.0, "p95_ms": 400.0, "requests_per_s": 2.0}


@pytest.mark.parametrize("questions,batch,steps", [(20, 4, 3), (18, 4, 3), (18, 4, 2), (18, 4, 9), (18, 4, None),
                                                   (40, 4, 3)])
@pytest.mark.filterwarnings("ignore:Your input ran out of data")  # the short second epoch this test is about
def test_timed_questions_are_those_keras_reads_in_the_second_epoch(questions, batch, steps):
    """Keras ends an epoch when a pass runs out and does not start the next pass inside it, so 2 epochs of
    ``steps`` batches over fewer than 2 x ``steps`` batches time fewer questions than steps x batch."""
    import keras
    import numpy as np

    sizes = [min(batch, questions - start) for start in range(0, questions, batch)]

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return len(sizes)

        def __getitem__(self, index):
            return np.zeros((sizes[index], 1), "float32"), np.zeros((sizes[index], 1), "float32")

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    epochs = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, index, logs=None):
            epochs[-1] += 1

        def on_epoch_begin(self, epoch, logs=None):
            epochs.append(0)

    steps_per_epoch = None if steps is None else min(steps, len(sizes))  # as `vqa train` caps it
    model.fit(Batches(), epochs=2, steps_per_epoch=steps_per_epoch, verbose=0, callbacks=[Record()])
    first, second = epochs
    start = first % len(sizes)
    read = sum(sizes[(start + i) % len(sizes)] for i in range(second))
    assert harness.timed_questions(questions, batch, steps) == read


def test_the_ceiling_feed_reads_the_source_once_and_replays_its_first_pass():
    """bench.cached_train: the feed's batches are drawn once before fit; every epoch after replays them."""
    import numpy as np
    import tensorflow as tf

    from bench.cached_train import cached

    passes = []

    def source():  # a reshuffling source: a second read would give other batches
        passes.append(len(passes))
        rng = np.random.default_rng(len(passes))
        for width in (5, 2, 3):
            yield rng.integers(0, 100, (4, width)).astype(np.int32)

    def training_feed(strategy, role, train_set):
        return tf.data.Dataset.from_generator(source, output_signature=tf.TensorSpec((None, None), tf.int32))

    replay = cached(training_feed)(None, None, None)
    assert len(passes) == 1  # filled before fit starts
    epochs = [[batch.numpy().tolist() for batch in replay] for _ in range(2)]
    assert len(passes) == 1 and epochs[0] == epochs[1]
    assert [len(batch[0]) for batch in epochs[0]] == [5, 2, 3]  # the bucketed widths kept
    with pytest.raises(SystemExit, match="not a tf.data Dataset"):
        cached(lambda strategy, role, train_set: [np.zeros(2)])(None, None, None)
