"""Training on several devices or hosts: TF_CONFIG, strategies, the chief's files, per-worker shards.

``vqa train --distribute``:

- ``mirrored``: ``tf.distribute.MirroredStrategy`` over this host's devices (TensorFlow backend).
- ``multiworker``: ``tf.distribute.MultiWorkerMirroredStrategy`` over the hosts that ``TF_CONFIG``
  names, one device per worker. Every worker runs the same command; worker r reads only its
  r-th slice of every global batch (``QuestionBatches(shard=(r, N))``), so an epoch has the
  same steps as on one worker and covers each example once. Only the chief writes ``--out``
  and ``--logdir``; the others write to temporary folders removed at exit.
- ``data-parallel``: ``keras.distribution.DataParallel`` over this host's devices (JAX backend).

``train.py`` calls, in order: ``cluster_role`` (parse TF_CONFIG, before anything is written),
``make_strategy`` (forms the cluster, or ends the process with one line after
``VQA_CLUSTER_TIMEOUT`` seconds), ``worker_paths`` (where this worker writes), ``feed`` (what ``fit`` reads),
``fit_scope`` (the scope ``fit`` runs in) and ``callbacks`` (the per-epoch read report).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import keras

from vqa import artifacts, data
from vqa.config import STRATEGIES
from vqa.errors import InputError, ResourceError

# Which Keras backend each strategy runs on, and what to use instead on the other one.
BACKENDS = {"mirrored": "tensorflow", "multiworker": "tensorflow", "data-parallel": "jax"}
ALTERNATIVE = {"tensorflow": "use --distribute mirrored (one host) or multiworker (several hosts, TF_CONFIG)",
               "jax": "use --distribute data-parallel (all devices of this host)"}
TIMEOUT_ENV = "VQA_CLUSTER_TIMEOUT"
DEFAULT_TIMEOUT_S = 300.0
TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                     '"task": {"type": "worker", "index": 0}}')
JOBS = ("chief", "worker")  # chief (if any) is rank 0, then the workers in order, as TensorFlow counts them

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerRole:
    """This process's place in a cluster: ``rank`` of ``num_workers``, and every worker's address."""

    rank: int = 0
    num_workers: int = 1
    addresses: tuple[str, ...] = ()

    @property
    def is_chief(self) -> bool:
        """Whether this worker writes the model directory, checkpoints, logs and history."""
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int]:
        """(index, count) for ``QuestionBatches(shard=...)``."""
        return self.rank, self.num_workers

    @property
    def name(self) -> str:
        return f"worker {self.rank} of {self.num_workers}"


SINGLE = WorkerRole()


# --------------------------------------------------------------------------- TF_CONFIG
def _address_error(address) -> str | None:
    """Why ``address`` is not a usable "host:port", or None."""
    if not isinstance(address, str) or ":" not in address:
        return f"{address!r} is not \"host:port\""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return f"{address!r} is not \"host:port\" with a port in 1-65535"
    return None


def _cluster_addresses(cluster) -> list[str]:
    """Every worker's address in rank order (chief first), checked; InputError on a bad cluster."""
    if not isinstance(cluster, dict) or not cluster:
        raise InputError(f"TF_CONFIG: \"cluster\" must map job names to address lists, e.g. {TF_CONFIG_EXAMPLE}")
    unknown = sorted(set(cluster) - set(JOBS))
    if unknown:
        raise InputError(f"TF_CONFIG: job {unknown[0]!r} is not supported; name the hosts under \"worker\" "
                         "(and optionally one \"chief\")")
    addresses = []
    for job in JOBS:
        hosts = cluster.get(job, [])
        if not isinstance(hosts, list) or (job in cluster and not hosts):
            raise InputError(f"TF_CONFIG: cluster[{job!r}] must be a non-empty list of \"host:port\" strings")
        problems = [p for p in map(_address_error, hosts) if p]
        if problems:
            raise InputError(f"TF_CONFIG: cluster[{job!r}]: {problems[0]}")
        addresses += hosts
    if len(cluster.get("chief", [])) > 1:
        raise InputError("TF_CONFIG: at most one \"chief\"; list the other hosts under \"worker\"")
    duplicates = sorted({a for a in addresses if addresses.count(a) > 1})
    if duplicates:
        raise InputError(f"TF_CONFIG: {duplicates[0]} is listed twice; give every worker its own host:port")
    return addresses


def parse_tf_config(text: str | None) -> WorkerRole:
    """This worker's role from a ``TF_CONFIG`` JSON string.

    Args:
        text: the TF_CONFIG value, e.g. ``{"cluster": {"worker": [...]}, "task": {"type": "worker", "index": 0}}``.
    Returns:
        WorkerRole (rank 0 is the chief: the "chief" job if present, else worker 0).
    Raises:
        InputError: one line naming what is missing, malformed, or outside the cluster.
    """
    if not text or not text.strip():
        raise InputError(f"--distribute multiworker needs TF_CONFIG naming the cluster and this worker, "
                         f"e.g. TF_CONFIG='{TF_CONFIG_EXAMPLE}'")
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"TF_CONFIG is not valid JSON ({error.msg} at character {error.pos}); "
                         f"e.g. {TF_CONFIG_EXAMPLE}") from None
    if not isinstance(spec, dict):
        raise InputError(f"TF_CONFIG must be a JSON object with \"cluster\" and \"task\", e.g. {TF_CONFIG_EXAMPLE}")
    addresses = _cluster_addresses(spec.get("cluster"))
    task = spec.get("task")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise InputError("TF_CONFIG: \"task\" must give this worker's \"type\" and \"index\", "
                         "e.g. {\"type\": \"worker\", \"index\": 0}")
    job, index = task["type"], task["index"]
    hosts = spec["cluster"].get(job) if isinstance(job, str) else None
    if not hosts:
        raise InputError(f"TF_CONFIG: task type {job!r} is not a job of the cluster "
                         f"({', '.join(sorted(spec['cluster']))})")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(hosts):
        raise InputError(f"TF_CONFIG: task {job} {index!r} is outside the cluster ({len(hosts)} {job} "
                         f"address(es): index 0-{len(hosts) - 1})")
    offset = len(spec["cluster"].get("chief", [])) if job == "worker" else 0
    return WorkerRole(offset + index, len(addresses), tuple(addresses))


def cluster_role(name: str | None, environ=os.environ) -> WorkerRole:
    """This process's role for ``--distribute name`` (``multiworker`` reads ``TF_CONFIG``), else SINGLE."""
    if name is not None and name not in STRATEGIES:
        raise InputError(f"--distribute {name}: choose one of {', '.join(STRATEGIES)}")
    return parse_tf_config(environ.get("TF_CONFIG")) if name == "multiworker" else SINGLE


def cluster_timeout(environ=os.environ) -> float:
    """Seconds to wait for every worker to join (``VQA_CLUSTER_TIMEOUT``, default 300)."""
    text = environ.get(TIMEOUT_ENV, "").strip()
    try:
        seconds = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise InputError(f"{TIMEOUT_ENV}={text!r}: give the seconds to wait for the other workers, e.g. 300")
    return seconds


# --------------------------------------------------------------------------- strategies
def check_backend(name: str | None, backend: str) -> None:
    """InputError naming the fix when strategy ``name`` does not run on Keras ``backend``."""
    if name is None or BACKENDS[name] == backend:
        return
    fix = ALTERNATIVE.get(backend, f"set KERAS_BACKEND={BACKENDS[name]}")
    raise InputError(f"--distribute {name} needs KERAS_BACKEND={BACKENDS[name]} (this is {backend}); {fix}")


def _check_own_port(role: WorkerRole) -> None:
    """InputError if this worker's port is taken: TensorFlow would fail later with a long trace."""
    port = int(role.addresses[role.rank].rpartition(":")[2])
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does: a port in TIME_WAIT is free
        try:
            probe.bind(("", port))
        except OSError as error:
            raise InputError(f"TF_CONFIG: this worker's port {port} ({role.addresses[role.rank]}) is not free "
                             f"({error.strerror}); stop what uses it or choose another port") from None


# Run as a separate process: TensorFlow waits for the cluster in C++ holding the GIL, so no
# Python thread or signal handler of the waiting process can run until the cluster forms.
_WATCHDOG = r"""
import os, signal, socket, sys, time
parent, seconds, rank, addresses = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[5:]
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    time.sleep(0.5)
    if os.getppid() != parent:
        sys.exit(0)
def answers(address):
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=2).close()
        return True
    except OSError:
        return False
silent = [(r, a) for r, a in enumerate(addresses) if r != rank and not answers(a)]
if silent:
    r, a = silent[0]
    problem = (f"worker {r} at {a} not reachable within {seconds:g} s; start the same command there, "
               f"check its host and firewall, or raise {sys.argv[4]}")
else:
    problem = f"the cluster did not form within {seconds:g} s though every worker answers; raise {sys.argv[4]}"
print(f"vqa train: error: TF_CONFIG: {problem}", file=sys.stderr, flush=True)
os.kill(parent, signal.SIGKILL)
"""


@contextlib.contextmanager
def _deadline(role: WorkerRole, seconds: float):
    """Run the body, or kill this process with one line naming a silent worker after ``seconds``."""
    watchdog = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(seconds), str(role.rank),
                                 TIMEOUT_ENV, *role.addresses])
    try:
        yield
    finally:
        watchdog.kill()
        watchdog.wait()


def _form_cluster(role: WorkerRole, seconds: float):
    """MultiWorkerMirroredStrategy once every worker has joined and answered one all-reduce."""
    import tensorflow as tf

    _check_own_port(role)
    with _deadline(role, seconds):
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        # A barrier: the strategy may return before the peers are up; a collective cannot.
        strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)
    if strategy.num_replicas_in_sync != role.num_workers:
        raise InputError(f"--distribute multiworker: {strategy.num_replicas_in_sync} devices for {role.num_workers} "
                         "workers; run one worker per GPU (CUDA_VISIBLE_DEVICES) or use --distribute mirrored")
    return strategy


def make_strategy(name: str | None, role: WorkerRole = SINGLE):
    """The strategy for ``--distribute name``: a tf.distribute.Strategy, a keras.distribution.DataParallel, or None.

    For ``multiworker`` this waits until every worker of ``role`` has joined; after
    ``VQA_CLUSTER_TIMEOUT`` seconds a watchdog prints one line naming the silent worker and
    kills this process (exit status 137), before anything was written to ``--out``.
    """
    if name is None:
        return None
    check_backend(name, keras.backend.backend())
    if name == "data-parallel":
        devices = keras.distribution.list_devices()
        logger.info("data-parallel over %d devices: %s", len(devices), ", ".join(devices))
        return keras.distribution.DataParallel(devices=devices)
    import tensorflow as tf

    if name == "mirrored":
        # TensorFlow's default is every GPU, else one CPU; logical CPUs count when there is no GPU.
        devices = [d.name for d in tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")]
        logger.info("mirrored over %d devices: %s", len(devices), ", ".join(devices))
        return tf.distribute.MirroredStrategy(devices=devices)
    return _form_cluster(role, cluster_timeout())


# --------------------------------------------------------------------------- where each worker writes
def worker_paths(out_dir: Path, logdir: Path, role: WorkerRole, *, fresh: bool = False) -> tuple[Path, Path]:
    """(model directory, TensorBoard folder) this worker writes to.

    The chief writes the real ones. Another worker gets a temporary folder (removed when the
    process exits) holding a copy of the chief's config, history and BackupAndRestore state, so
    that a restarted cluster resumes every worker at the same epoch with the same weights and
    learning-rate schedule; with
    ``fresh`` (``--overwrite``: the chief starts again) nothing is copied.
    """
    if role.is_chief:
        return Path(out_dir), Path(logdir)
    scratch = Path(tempfile.mkdtemp(prefix=f"vqa-worker{role.rank}-"))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    backup = Path(out_dir) / artifacts.BACKUP_DIR
    if not fresh and backup.is_dir() and (Path(out_dir) / artifacts.CONFIG_JSON).is_file():
        shutil.copytree(backup, scratch / "out" / artifacts.BACKUP_DIR)
        shutil.copy2(Path(out_dir) / artifacts.CONFIG_JSON, scratch / "out" / artifacts.CONFIG_JSON)
        if (Path(out_dir) / artifacts.HISTORY_CSV).is_file():  # the plateau schedule resumes from it, as the chief's
            shutil.copy2(Path(out_dir) / artifacts.HISTORY_CSV, scratch / "out" / artifacts.HISTORY_CSV)
    return scratch / "out", scratch / "logs"


def shuffle_seed(seed: int | None, role: WorkerRole) -> int | None:
    """The shuffling seed: workers must draw the same global batches, so a cluster never shuffles unseeded."""
    if seed is not None or role.num_workers == 1:
        return seed
    return zlib.crc32(",".join(role.addresses).encode())


# --------------------------------------------------------------------------- what fit reads
class _Pass:
    """A generator factory over a PyDataset for tf.data: one call = one epoch; counts the examples read."""

    def __init__(self, batches: keras.utils.PyDataset):
        self.batches, self.passes, self.examples_read = batches, 0, 0

    def __call__(self):
        if self.passes:
            self.batches.on_epoch_end()
        self.passes, self.examples_read = self.passes + 1, 0
        for index in range(len(self.batches)):
            batch = self.batches[index]
            self.examples_read += len(next(iter(batch[0].values())))
            yield batch


def _signature(batches: keras.utils.PyDataset):
    """tf.TensorSpec per array of a batch: the batch axis, and any axis that differs between batches 0 and 1, as None."""
    import tensorflow as tf

    first, second = batches[0], batches[min(1, len(batches) - 1)]

    def spec(a, b):
        shape = tuple(None if axis == 0 or a.shape[axis] != b.shape[axis] else a.shape[axis] for axis in range(a.ndim))
        return tf.TensorSpec(shape, tf.as_dtype(a.dtype))

    return keras.tree.map_structure(spec, first, second)


class _Trimmed(keras.utils.PyDataset):
    """QuestionBatches with each batch cut to a multiple of ``multiple`` examples (a JAX mesh splits evenly only).

    A batch smaller than ``multiple`` (the epoch's last, at most) is skipped.
    """

    def __init__(self, batches, multiple: int):
        super().__init__()
        self.batches, self.multiple = batches, multiple
        self.kept = [i for i, rows in enumerate(batches.batches) if len(rows) >= multiple]

    def __len__(self) -> int:
        return len(self.kept)

    def __getitem__(self, index: int):
        batch = self.batches[self.kept[index]]
        keep = len(next(iter(batch[0].values()))) // self.multiple * self.multiple
        return keras.tree.map_structure(lambda array: array[:keep], batch)

    def on_epoch_end(self) -> None:
        self.batches.on_epoch_end()
        self.kept = [i for i, rows in enumerate(self.batches.batches) if len(rows) >= self.multiple]


def training_feed(strategy, role: WorkerRole, batches: data.QuestionBatches):
    """What ``fit`` trains on: the one place where the input feed is chosen.

    - a strategy (mirrored, multiworker, data-parallel): ``feed``, so that each worker reads its own shard;
    - one device, labelled features in memory, TensorFlow: ``data.in_graph_batches``, so that a small
      model's step does not wait on Python to gather its batch;
    - otherwise (memory-mapped or chunked features, another backend): the ``QuestionBatches`` PyDataset.
    """
    if strategy is not None:
        return feed(strategy, role, batches)
    in_graph = data.in_graph_batches(batches)
    return batches if in_graph is None else in_graph


def feed(strategy, role: WorkerRole, batches: keras.utils.PyDataset | None):
    """What ``fit`` reads: ``batches``, or for a cluster this worker's share as a distributed tf.data input.

    ``batches`` must already be sharded for ``role`` (``QuestionBatches(shard=role.shard)``): the
    dataset is handed to each worker's replica as is (no re-batching, no auto-sharding). Under
    data-parallel the last batch of an epoch loses its last (batch size mod devices) examples.
    """
    if batches is None or strategy is None:
        return batches
    if isinstance(strategy, keras.distribution.DataParallel):
        devices = len(strategy.device_mesh.devices.flatten())
        if batches.batch_size % devices:
            raise InputError(f"--distribute data-parallel: --batch-size {batches.batch_size} must be a multiple "
                             f"of the {devices} devices")
        return _Trimmed(batches, devices)
    if role.num_workers == 1:
        return batches
    import tensorflow as tf

    reader = _Pass(batches)
    dataset = tf.data.Dataset.from_generator(reader, output_signature=_signature(batches))
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(len(batches))).prefetch(2)
    distributed = strategy.distribute_datasets_from_function(lambda context: dataset)
    distributed.vqa_reader = reader  # for ReadReport
    return distributed


def _as_rank1(step):
    """``step`` with its scalar metric values as shape (1,) tensors (see ``fit_scope``)."""

    def wrapped(data):
        return keras.tree.map_structure(lambda value: keras.ops.expand_dims(value, 0), step(data))

    return wrapped


@contextlib.contextmanager
def fit_scope(model: keras.Model, strategy, sample):
    """The scope ``model.fit`` must run in under ``strategy``, working around two Keras 3.15 bugs.

    1. Before training Keras reduces the first distributed batch across replicas to build the
       model (``_maybe_symbolic_build``), which fails on dict inputs ("unsupported type <class
       'dict'>", keras-team/keras#20329). The model, metrics and optimizer are built here from
       one local ``sample`` batch instead, and fit takes the strategy from the scope.
    2. Across workers Keras averages each step's metrics with ``reduce("MEAN", axis=0)``, which
       fails on scalars; the steps return them as shape (1,) so that the mean is taken over
       workers. Epoch-end metrics come from the metric variables, aggregated over all workers.
    """
    if strategy is None:
        yield
        return
    if isinstance(strategy, keras.distribution.DataParallel):
        with strategy.scope():
            yield
        return
    import tensorflow as tf

    with strategy.scope():
        model._symbolic_build(data_batch=sample)
        saved, model._distribute_strategy = model._distribute_strategy, None
        if strategy.extended._in_multi_worker_mode():
            model.train_step, model.test_step = _as_rank1(model.train_step), _as_rank1(model.test_step)
        try:
            yield
        except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.DeadlineExceededError) as error:
            raise ResourceError(f"a worker of the cluster stopped or became unreachable ({type(error).__name__}); "
                                "start the same command on every worker again: training resumes at the last "
                                "finished epoch") from None
        finally:
            model._distribute_strategy = saved
            vars(model).pop("train_step", None), vars(model).pop("test_step", None)


class ReadReport(keras.callbacks.Callback):
    """Log, after every epoch, how many training examples this worker read (one line per worker)."""

    def __init__(self, reader: _Pass, role: WorkerRole, total: int):
        super().__init__()
        self.reader, self.role, self.total = reader, role, total

    def on_epoch_end(self, epoch, logs=None):
        logger.info("%s: epoch %d: read %d of %d train examples in %d steps", self.role.name, epoch + 1,
                    self.reader.examples_read, self.total, len(self.reader.batches))


def callbacks(role: WorkerRole, train_feed, total: int) -> list:
    """The per-worker callbacks (the read report) for a cluster, else none."""
    reader = getattr(train_feed, "vqa_reader", None)
    return [] if reader is None else [ReadReport(reader, role, total)]
