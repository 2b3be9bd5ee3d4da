"""Training on several devices or hosts: the strategy for ``--distribute``, the scope ``fit`` runs in, the feed.

``vqa train --distribute``:

- ``mirrored``: ``tf.distribute.MirroredStrategy`` over this host's devices (TensorFlow backend).
- ``multiworker``: ``tf.distribute.MultiWorkerMirroredStrategy`` over the hosts that ``TF_CONFIG``
  names (``vqa.cluster``), one device per worker. Every worker runs the same command and reads
  only its slice of every global batch (``feed``).
- ``data-parallel``: ``keras.distribution.DataParallel`` over this host's devices (JAX backend).

``train.py`` calls ``check_backend`` (before anything is written), ``make_strategy`` (forms the
cluster, or ends the process with one line after ``VQA_CLUSTER_TIMEOUT`` seconds, see
``vqa.watchdog``) and ``fit_scope`` (the scope ``fit`` runs in). The role, the folders each
worker writes and its seed are ``vqa.cluster``'s; ``training_feed`` chooses what ``fit`` reads and
``callbacks`` gives the per-epoch read report of a cluster.
"""

from __future__ import annotations

import contextlib
import logging
import socket

import keras

from vqa import data, watchdog
from vqa.cluster import SINGLE, TIMEOUT_ENV, WorkerRole, cluster_timeout
from vqa.errors import InputError, ResourceError

# Which Keras backend each strategy runs on, and what to use instead on the other one.
BACKENDS = {"mirrored": "tensorflow", "multiworker": "tensorflow", "data-parallel": "jax"}
ALTERNATIVE = {"tensorflow": "use --distribute mirrored (one host) or multiworker (several hosts, TF_CONFIG)",
               "jax": "use --distribute data-parallel (all devices of this host)"}

logger = logging.getLogger(__name__)


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


def _form_cluster(role: WorkerRole, seconds: float):
    """MultiWorkerMirroredStrategy once every worker has joined and answered one all-reduce."""
    import tensorflow as tf

    _check_own_port(role)
    with watchdog.watching(role.rank, role.addresses, seconds, TIMEOUT_ENV):
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
