"""Training on several devices or hosts: the strategy for ``--distribute`` and the scope ``fit`` runs in.

``vqa train --distribute``:

- ``mirrored``: ``tf.distribute.MirroredStrategy`` over this host's devices (TensorFlow backend).
- ``multiworker``: ``tf.distribute.MultiWorkerMirroredStrategy`` over the hosts that ``TF_CONFIG``
  names (``vqa.cluster``), one device per worker. Every worker runs the same command and reads
  only its slice of every global batch (``vqa.data.feed``).
- ``data-parallel``: ``keras.distribution.DataParallel`` over this host's devices (JAX backend).

``train.py`` calls ``check_backend`` (before anything is written), ``make_strategy`` (forms the
cluster, or ends the process with one line after ``VQA_CLUSTER_TIMEOUT`` seconds, see
``vqa.watchdog``) and ``fit_scope`` (the scope ``fit`` runs in). The role, the folders each
worker writes and its seed are ``vqa.cluster``'s; what ``fit`` reads is ``vqa.data.training_feed``.
"""

from __future__ import annotations

import contextlib
import logging
import socket

import keras

from vqa import watchdog
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
