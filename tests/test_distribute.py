"""vqa.cluster, vqa.watchdog, vqa.distribute and `vqa train --distribute`: TF_CONFIG, the watchdog, sharding,
a 2-worker cluster, resuming, devices.

The cluster tests start real `python -m vqa train` processes on 127.0.0.1 (free ports) on a
tiny `vqa synth` set whose image features are the images' downsampled pixels (fast to make).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import free_port
from PIL import Image

from vqa import artifacts, cluster, distribute, watchdog
from vqa.cli import main
from vqa.data import QuestionBatches, feed, feed_callbacks, training_feed
from vqa.errors import InputError
from vqa.feature_file import FeaturesFile
from vqa.prepared import Split

EPOCHS = 2
# No dropout: then two devices or workers compute the global batch's gradient as one device does (up to
# summation order), so a few dozen val questions can tell a real divergence from dropout noise.
TRAIN_FLAGS = ["--epochs", str(EPOCHS), "--batch-size", "32", "--seed", "0", "--hidden-units", "256",
               "--dropout", "0", "--verbose", "2"]
READ = re.compile(r"worker (\d) of 2: epoch (\d+): read (\d+) of (\d+) train examples in (\d+) steps")
STEPS = re.compile(r"^(\d+)/(\d+) - ", re.MULTILINE)


# --------------------------------------------------------------------------- fixtures and helpers
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(prepared dir, features file): `vqa synth` + `vqa prepare`, 8x8 pixel features per image."""
    from vqa.sample_dataset import build_sample_dataset

    base = tmp_path_factory.mktemp("distribute")
    dataset = build_sample_dataset(base, num_images=48, seed=0, max_objects=1, features=(), num_answers=100)
    paths = sorted((dataset.raw / "images").glob("*/*.jpg"))
    ids = np.array([int(p.stem.rsplit("_", 1)[1]) for p in paths], dtype=np.int64)
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB").resize((8, 8)), np.float32).ravel() for p in paths])
    FeaturesFile.write(base / "features.h5", pixels / 255.0, ids, source="images", cnn_weights="")
    return dataset.prepared, base / "features.h5"


def tf_config(ports, index) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def train_command(tiny, out: Path, *extra) -> list[str]:
    data, features = tiny
    return [sys.executable, "-m", "vqa", "train", "mlp", "--data", str(data), "--features", str(features),
            "--out", str(out / "model"), "--logdir", str(out / "Graph"), *TRAIN_FLAGS, *extra]


def environment(**values) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "KERAS_BACKEND")}
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1", **values}


def start_cluster(tiny, out: Path, ports, logs: Path, tag: str) -> list[subprocess.Popen]:
    """Two workers running the same command; their output goes to logs/{tag}{index}.log."""
    logs.mkdir(exist_ok=True)
    scratch = logs / "tmp"  # where the non-chief worker's temporary folders go
    scratch.mkdir(exist_ok=True)
    return [subprocess.Popen(train_command(tiny, out, "--distribute", "multiworker"),
                             env=environment(TF_CONFIG=tf_config(ports, i), VQA_CLUSTER_TIMEOUT="120",
                                             TMPDIR=str(scratch)),
                             stdout=(logs / f"{tag}{i}.log").open("w"), stderr=subprocess.STDOUT)
            for i in range(2)]


def wait_all(processes, timeout=240) -> list[int]:
    return [p.wait(timeout=timeout) for p in processes]


def last_val_accuracy(model_dir: Path) -> float:
    return json.loads((model_dir / artifacts.HISTORY_JSON).read_text())["val_accuracy"][-1]


@pytest.fixture(scope="module")
def single_run(tiny, tmp_path_factory):
    """The same training on one worker, no strategy: (model dir, steps per epoch)."""
    out = tmp_path_factory.mktemp("single")
    done = subprocess.run(train_command(tiny, out), env=environment(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    return out / "model", {int(total) for _, total in STEPS.findall(done.stdout + done.stderr)}


# --------------------------------------------------------------------------- TF_CONFIG and sharding
EXAMPLE = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}


@pytest.mark.parametrize("text, message", [
    (None, "needs TF_CONFIG"),
    ("{cluster: 1}", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    (json.dumps({"task": EXAMPLE["task"]}), '"cluster" must map'),
    (json.dumps({**EXAMPLE, "task": {"type": "worker"}}), '"task" must give'),
    (json.dumps({**EXAMPLE, "task": {"type": "worker", "index": 2}}), "task worker 2 is outside the cluster"),
    (json.dumps({**EXAMPLE, "task": {"type": "chief", "index": 0}}), "'chief' is not a job"),
    (json.dumps({**EXAMPLE, "cluster": {"worker": ["a:1"], "ps": ["c:3"]}}), "job 'ps' is not supported"),
    (json.dumps({**EXAMPLE, "cluster": {"worker": ["a:1", "b"]}}), "'b' is not \"host:port\""),
    (json.dumps({**EXAMPLE, "cluster": {"worker": ["a:1", "a:1"]}}), "a:1 is listed twice"),
])
def test_bad_tf_config_is_one_line_naming_the_problem(text, message):
    with pytest.raises(InputError, match=re.escape(message)) as error:
        cluster.parse_tf_config(text)
    assert "\n" not in str(error.value)


def test_tf_config_ranks_the_chief_first():
    spec = {"cluster": {"chief": ["c:1"], "worker": ["w:2", "w:3"]}, "task": {"type": "worker", "index": 1}}
    role = cluster.parse_tf_config(json.dumps(spec))
    assert (role.rank, role.num_workers, role.is_chief, role.addresses) == (2, 3, False, ("c:1", "w:2", "w:3"))
    assert cluster.parse_tf_config(json.dumps({**spec, "task": {"type": "chief", "index": 0}})).is_chief


@pytest.mark.parametrize("value", ["soon", "0", "-5"])
def test_bad_cluster_timeout_names_the_variable(value):
    with pytest.raises(InputError, match=cluster.TIMEOUT_ENV):
        cluster.cluster_timeout({cluster.TIMEOUT_ENV: value})
    assert cluster.cluster_timeout({}) == cluster.DEFAULT_TIMEOUT_S


# The watched process: waits in `watching` as a worker waits for its cluster to form.
WATCHED = ("import sys, time\nfrom vqa.watchdog import watching\n"
           "with watching(0, tuple(sys.argv[1:]), 1, 'VQA_CLUSTER_TIMEOUT'):\n    time.sleep(60)\n")


@pytest.mark.parametrize("peer_listens, line", [
    (False, "vqa train: error: TF_CONFIG: worker 1 at {peer} not reachable within 1 s; start the same command "
            "there, check its host and firewall, or raise VQA_CLUSTER_TIMEOUT"),
    (True, "vqa train: error: TF_CONFIG: the cluster did not form within 1 s though every worker answers; "
           "raise VQA_CLUSTER_TIMEOUT"),
])
def test_watchdog_kills_a_waiting_worker_with_one_line(peer_listens, line):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        peer = f"127.0.0.1:{listener.getsockname()[1] if peer_listens else free_port()}"
        done = subprocess.run([sys.executable, "-c", WATCHED, f"127.0.0.1:{free_port()}", peer],
                              env=environment(), capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGKILL
    assert done.stderr.strip().splitlines() == [line.format(peer=peer)]


def test_watchdog_leaves_quietly_once_its_parent_is_gone(capsys):
    # This process is not the watchdog's parent: as if the worker had exited before the deadline.
    assert watchdog.main([str(os.getpid()), "30", "0", cluster.TIMEOUT_ENV, "127.0.0.1:1"]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("name, backend, fix", [("mirrored", "jax", "use --distribute data-parallel"),
                                                ("multiworker", "jax", "use --distribute data-parallel"),
                                                ("data-parallel", "tensorflow", "use --distribute mirrored")])
def test_strategy_on_the_wrong_backend_names_the_fix(name, backend, fix):
    with pytest.raises(InputError, match=fix):
        distribute.check_backend(name, backend)


@pytest.mark.parametrize("n, batch_size, bucket", [(101, 16, False), (97, 10, True), (33, 32, False)])
def test_shards_cover_each_question_once_in_the_same_steps(n, batch_size, bucket):
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 9, n).astype(np.int32)
    tokens = np.where(np.arange(8)[None, :] < lengths[:, None], 1, 0).astype(np.int32)
    split = Split("train2014", tokens, lengths, np.arange(n), np.arange(n), np.arange(n, dtype=np.int32))
    features = np.arange(n, dtype=np.float32)[:, None]
    whole = QuestionBatches(split, features, np.arange(n), batch_size=batch_size, seed=3, bucket=bucket)
    shards = [QuestionBatches(split, features, np.arange(n), batch_size=batch_size, seed=3, bucket=bucket,
                              shard=(r, 2)) for r in range(2)]
    for _ in range(2):  # two epochs: the workers reshuffle alike
        assert len(shards[0]) == len(shards[1]) == len(whole) - (n % batch_size == 1)
        seen = []
        for i in range(len(shards[0])):
            (a, ya), (b, yb) = shards[0][i], shards[1][i]
            assert len(ya["answer"]) >= 1 and len(yb["answer"]) >= 1
            assert a["question"].shape[1] == b["question"].shape[1]  # one T per global batch
            seen += list(ya["answer"]) + list(yb["answer"])
        assert sorted(seen) == list(range(n))
        for batches in shards:
            batches.on_epoch_end()


def test_training_feed_without_a_strategy_is_in_graph_unless_sharded():
    import tensorflow as tf

    n = 40
    split = Split("train2014", np.ones((n, 4), np.int32), np.full(n, 4, np.int32), np.arange(n), np.arange(n),
                  np.arange(n, dtype=np.int32) % 3)
    whole, shard = (QuestionBatches(split, np.ones((n, 2), np.float32), np.arange(n), batch_size=8, shard=s)
                    for s in ((0, 1), (0, 2)))
    assert isinstance(training_feed(None, cluster.SINGLE, whole), tf.data.Dataset)
    assert training_feed(None, cluster.WorkerRole(0, 2, ("a:1", "b:2")), shard) is shard
    assert feed(None, cluster.SINGLE, None) is None and feed(None, cluster.SINGLE, whole) is whole
    assert feed_callbacks(cluster.SINGLE, whole, total=n) == []


def test_only_the_chief_writes_out_the_others_start_from_its_backup(tmp_path):
    out, logdir = tmp_path / "model", tmp_path / "Graph"
    (out / artifacts.BACKUP_DIR).mkdir(parents=True)
    (out / artifacts.BACKUP_DIR / "latest.weights.h5").write_text("w")
    (out / artifacts.CONFIG_JSON).write_text("{}")
    (out / artifacts.HISTORY_CSV).write_text("epoch,val_loss\n0,2.5\n")
    chief, other = (cluster.WorkerRole(rank, 2, ("a:1", "b:2")) for rank in range(2))
    assert cluster.worker_paths(out, logdir, chief) == (out, logdir)
    scratch_out, scratch_logs = cluster.worker_paths(out, logdir, other)
    assert tmp_path not in scratch_out.parents and scratch_logs.parent == scratch_out.parent
    assert (scratch_out / artifacts.BACKUP_DIR / "latest.weights.h5").read_text() == "w"
    # The history too: the plateau schedule resumes from it on every worker alike.
    assert (scratch_out / artifacts.HISTORY_CSV).read_text() == (out / artifacts.HISTORY_CSV).read_text()
    assert not (cluster.worker_paths(out, logdir, other, fresh=True)[0] / artifacts.BACKUP_DIR).exists()
    assert cluster.shuffle_seed(None, other) == cluster.shuffle_seed(None, chief) is not None


def test_bad_tf_config_exits_non_zero_and_writes_nothing(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}')
    data, features = tiny
    status = main(["train", "mlp", "--data", str(data), "--features", str(features), "--out", str(tmp_path / "m"),
                   "--logdir", str(tmp_path / "g"), "--distribute", "multiworker"])
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1 and "outside the cluster" in err
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- real clusters
@pytest.mark.slow
def test_unreachable_peer_is_one_line_after_the_timeout(tiny, tmp_path):
    ports = [free_port(), free_port()]
    done = subprocess.run(train_command(tiny, tmp_path / "run", "--distribute", "multiworker"), capture_output=True,
                          env=environment(TF_CONFIG=tf_config(ports, 1), VQA_CLUSTER_TIMEOUT="3"), text=True,
                          timeout=180)
    assert done.returncode != 0
    assert f"worker 0 at 127.0.0.1:{ports[0]} not reachable within 3 s" in done.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_two_workers_share_each_epoch_and_match_one_worker(tiny, single_run, tmp_path):
    out, ports = tmp_path / "run", [free_port(), free_port()]
    assert wait_all(start_cluster(tiny, out, ports, tmp_path, "w")) == [0, 0], (tmp_path / "w0.log").read_text()[-3000:]
    logs = [(tmp_path / f"w{i}.log").read_text() for i in range(2)]
    reads = [READ.findall(log) for log in logs]
    for epoch in range(1, EPOCHS + 1):
        counts = [int(n) for r in reads for w, e, n, total, steps in r if int(e) == epoch]
        total = int(reads[0][0][3])
        assert len(counts) == 2 and sum(counts) == total and abs(counts[0] - counts[1]) <= 1
    steps = {int(r[4]) for r in reads[0] + reads[1]}
    single_dir, single_steps = single_run
    assert steps == single_steps
    model_files = {artifacts.MODEL_FILE, artifacts.BEST_MODEL_FILE, artifacts.CONFIG_JSON, artifacts.HISTORY_JSON,
                   artifacts.HISTORY_CSV, artifacts.VOCABULARY_JSON, artifacts.ANSWERS_JSON, artifacts.BACKUP_DIR}
    assert sorted(p.name for p in out.iterdir()) == ["Graph", "model"]
    assert {p.name for p in (out / "model").iterdir()} == model_files
    assert json.loads((out / "model" / artifacts.CONFIG_JSON).read_text())["status"] == "finished"
    assert abs(last_val_accuracy(out / "model") - last_val_accuracy(single_dir)) <= 0.1
    assert not list((tmp_path / "tmp").glob("vqa-worker*"))  # removed when the worker finished
    assert "model written to" in logs[0] and "model written to" not in logs[1]
    assert f"worker 1 of 2 finished; the chief (worker 0) wrote the model to {out / 'model'}" in logs[1]


@pytest.mark.slow
def test_every_worker_refuses_an_out_the_chief_would_refuse(tiny, tmp_path):
    """A --out the chief may not write stops each worker with the same line, before the cluster forms."""
    out, ports = tmp_path / "run", [free_port(), free_port()]
    (out / "model").mkdir(parents=True)
    (out / "model" / "notes.txt").write_text("mine")
    assert wait_all(start_cluster(tiny, out, ports, tmp_path, "w"), timeout=120) == [1, 1]
    for i in range(2):
        lines = (tmp_path / f"w{i}.log").read_text().strip().splitlines()
        assert lines[-1] == f"vqa train: error: {out / 'model'}: not empty and not a model directory; choose another --out or pass --overwrite"
        assert "Traceback" not in "\n".join(lines)
    assert [p.name for p in (out / "model").iterdir()] == ["notes.txt"] and not (out / "Graph").exists()


@pytest.mark.slow
def test_killed_worker_resumes_from_the_last_finished_epoch(tiny, tmp_path):
    out, ports = tmp_path / "run", [free_port(), free_port()]
    first = start_cluster(tiny, out, ports, tmp_path, "first")
    deadline = time.monotonic() + 240
    while "epoch 1: read" not in (tmp_path / "first1.log").read_text():
        assert time.monotonic() < deadline and first[1].poll() is None, (tmp_path / "first1.log").read_text()[-2000:]
        time.sleep(0.2)
    first[1].send_signal(signal.SIGKILL)
    chief = first[0].wait(timeout=120)
    assert chief != 0 and "training resumes at the last finished epoch" in (tmp_path / "first0.log").read_text()
    assert wait_all(start_cluster(tiny, out, ports, tmp_path, "again")) == [0, 0]
    again = (tmp_path / "again0.log").read_text() + (tmp_path / "again1.log").read_text()
    assert sorted(int(e) for _, e, *_ in READ.findall(again)) == [2, 2]  # both workers, epoch 2 only
    history = json.loads((out / "model" / artifacts.HISTORY_JSON).read_text())
    assert history["epoch"] == [0, 1]


# --------------------------------------------------------------------------- devices of one host
MIRRORED = ("import sys, tensorflow as tf; cpu = tf.config.list_physical_devices('CPU')[0]; "
            "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2); "
            "from vqa.cli import main; sys.exit(main(sys.argv[1:]))")


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["mirrored", "data-parallel"])
def test_two_local_devices_match_one(tiny, single_run, tmp_path, strategy):
    if strategy == "data-parallel":
        pytest.importorskip("jax")
        command = train_command(tiny, tmp_path, "--distribute", strategy)
        env = environment(KERAS_BACKEND="jax", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    else:
        command = [sys.executable, "-c", MIRRORED, *train_command(tiny, tmp_path, "--distribute", strategy)[3:]]
        env = environment()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert f"{strategy} over 2 devices" in output
    single_dir, single_steps = single_run
    assert {int(total) for _, total in STEPS.findall(output)} == single_steps
    if strategy == "data-parallel":  # one device of the same backend: JAX draws other initial weights than TF
        single_dir = tmp_path / "single-jax" / "model"
        alone = subprocess.run(train_command(tiny, tmp_path / "single-jax"), env=environment(KERAS_BACKEND="jax"),
                               capture_output=True, text=True, timeout=240)
        assert alone.returncode == 0, alone.stderr[-3000:]
    assert abs(last_val_accuracy(tmp_path / "model") - last_val_accuracy(single_dir)) <= 0.1
