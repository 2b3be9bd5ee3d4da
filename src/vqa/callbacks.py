"""The training run's Keras callbacks: metrics, timing, TensorBoard, checkpoints, the schedule.

``training_callbacks`` assembles the list ``vqa.train`` hands to ``fit``. Every callback that
keeps a "best so far" (the checkpoint, the plateau schedule) starts a resumed run from the
epochs already in history.csv, so ``--resume`` and a restart after a crash carry on one run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np

from vqa import artifacts, modeldir

if TYPE_CHECKING:
    from vqa.config import TrainConfig

class Plateau(keras.callbacks.ReduceLROnPlateau):
    """ReduceLROnPlateau that carries a resumed run's schedule on.

    Keras' callback starts every ``fit`` with no best value, so after ``--resume`` (or a restart
    after a crash) the first epoch always counted as an improvement. This one starts from the
    best monitored value of the epochs already done (``done``, from history.csv); the rate itself
    comes back with the optimiser's state from the backup.
    """

    def __init__(self, done=(), **kwargs):
        super().__init__(**kwargs)
        self.resumed_best = min(map(float, done), default=None)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.resumed_best is not None:
            self.best = self.resumed_best


def schedule_callbacks(config: TrainConfig, *, has_val: bool, done=()) -> list:
    """The learning-rate schedule's callbacks: ``Plateau`` halves the rate when the monitored loss
    stops falling ("plateau"), nothing for "none" (the tutorial's fixed rate).

    ``done``: the monitored loss of the epochs a resumed run already finished.
    """
    if config.lr_schedule == "none":
        return []
    return [Plateau(done, monitor="val_loss" if has_val else "loss", factor=0.5, patience=0,
                    min_lr=config.learning_rate / 32, verbose=0)]


class ModalAccuracy(keras.callbacks.Callback):
    """Add ``val_modal_accuracy``: accuracy over all val questions (outside-top-K ones count as wrong).

    Keras measures ``val_accuracy`` on the questions with a top-K label only; scaling by
    that fraction gives the modal-answer accuracy on the whole split.
    """

    def __init__(self, coverage: float):
        super().__init__()
        self.coverage = coverage

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and "val_accuracy" in logs:
            logs["val_modal_accuracy"] = float(logs["val_accuracy"]) * self.coverage


class AttentionEntropy(keras.callbacks.Callback):
    """Add ``attention_entropy_<l>`` per attention layer l: how spread the SAN's attention is.

    The mean entropy of the layer's map over a fixed batch of questions, divided by log(S*S):
    1 is uniform attention (looking everywhere), 0 is one region. A cheap signal that the
    attention focuses as training goes (docs/attention.md); it lands in the history and TensorBoard.
    """

    def __init__(self, model: keras.Model, inputs: dict):
        super().__init__()
        self.full_model, self.inputs = model, inputs

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        maps = np.asarray(keras.ops.convert_to_numpy(self.full_model(self.inputs, training=False)["attention"]),
                          dtype=np.float64)
        entropy = -np.sum(maps * np.log(np.clip(maps, 1e-12, None)), axis=-1) / np.log(maps.shape[-1])
        for layer, value in enumerate(entropy.mean(axis=0), start=1):
            logs[f"attention_entropy_{layer}"] = float(value)


class EpochTimer(keras.callbacks.Callback):
    """Add ``train_seconds`` and ``val_seconds`` (wall time of the epoch's two passes) to its logs.

    They land in history.csv, history.json and TensorBoard, so a GPU job's throughput is on
    record without a profiler.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self.start, self.validation_start = time.perf_counter(), None

    def on_test_begin(self, logs=None):
        if getattr(self, "start", None) is not None and self.validation_start is None:
            self.validation_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        end = time.perf_counter()
        split = self.validation_start or end
        logs["train_seconds"], logs["val_seconds"] = split - self.start, end - split


class EpochScalars(keras.callbacks.Callback):
    """TensorBoard scalars per epoch written by the ``tensorboard`` package alone, without TensorFlow.

    Keras' ``TensorBoard`` callback writes through ``tf.summary``, so on a JAX machine without
    TensorFlow (a GPU job, ``--distribute data-parallel``) it cannot log. This writes what it would
    per epoch, under the same names: ``train/`` and ``validation/`` folders holding
    ``epoch_<metric>`` (``val_`` stripped in ``validation/``), so TensorBoard shows the same curves.
    Batch-level scalars and the graph are left out.
    """

    def __init__(self, logdir: Path):
        super().__init__()
        self.logdir, self.writers = Path(logdir), {}

    def _writer(self, split: str):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        if split not in self.writers:
            self.writers[split] = EventFileWriter(str(self.logdir / split))
        return self.writers[split]

    def on_epoch_end(self, epoch, logs=None):
        from tensorboard.compat.proto import event_pb2, summary_pb2

        values = {"train": {}, "validation": {}}
        for name, value in (logs or {}).items():
            if isinstance(value, (int, float, np.floating, np.integer)):
                split = "validation" if name.startswith("val_") else "train"
                values[split]["epoch_" + name.removeprefix("val_")] = float(value)
        for split, scalars in values.items():
            if scalars:
                summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=v)
                                                     for tag, v in scalars.items()])
                self._writer(split).add_event(event_pb2.Event(wall_time=time.time(), step=epoch, summary=summary))
                self._writer(split).flush()

    def on_train_end(self, logs=None):
        for writer in self.writers.values():
            writer.close()
        self.writers = {}


def tensorboard_callback(config: TrainConfig, logdir: Path) -> keras.callbacks.Callback:
    """Keras' ``TensorBoard`` where TensorFlow can be imported, else ``EpochScalars`` (per-epoch scalars)."""
    try:
        import tensorflow  # noqa: F401  (Keras' TensorBoard writes through tf.summary)
    except ImportError:
        return EpochScalars(logdir)
    return keras.callbacks.TensorBoard(log_dir=str(logdir), update_freq=config.update_freq, write_graph=True)


class Checkpoints(keras.callbacks.Callback):
    """Save the whole model after every epoch (``model.keras``) and at its lowest ``monitor`` (``best.keras``).

    ``fit`` trains a view of the model that outputs only the answer (``models.answer_only``);
    this saves ``model``, the SAN's attention output included. Each file is replaced atomically.
    The lowest value starts from ``done`` (the monitored values of the epochs a resumed run already
    finished, from history.csv) when their ``best.keras`` is there, so a resumed run's first epoch
    replaces it only if it beats every earlier epoch.
    """

    def __init__(self, model: keras.Model, out_dir: Path, *, monitor: str, done=()):
        super().__init__()
        self.full_model, self.out_dir, self.monitor = model, Path(out_dir), monitor
        has_best = (self.out_dir / artifacts.BEST_MODEL_FILE).is_file()
        self.best = min(map(float, done), default=float("inf")) if has_best else float("inf")

    def on_epoch_end(self, epoch, logs=None):
        modeldir.save_model(self.full_model, self.out_dir / artifacts.MODEL_FILE)
        value = (logs or {}).get(self.monitor)
        if value is not None and float(value) < self.best:
            self.best = float(value)
            modeldir.save_model(self.full_model, self.out_dir / artifacts.BEST_MODEL_FILE)


def training_callbacks(config: TrainConfig, model: keras.Model, out_dir: Path, logdir: Path, *, has_val: bool,
                       coverage: float, resuming: bool, sample: dict | None = None) -> list:
    """The run's callback list; order matters (the metrics and timer first, so loggers see them;
    the schedule before the backup, so a backup holds the rate the next epoch runs at).

    ``sample``: inputs of one batch on which a model with attention reports its entropy.
    """
    monitor = "val_loss" if has_val else "loss"
    done = modeldir.read_history(out_dir).get(monitor, []) if resuming else []
    return [
        ModalAccuracy(coverage),
        *([AttentionEntropy(model, sample)] if sample is not None else []),
        EpochTimer(),
        keras.callbacks.TerminateOnNaN(),
        tensorboard_callback(config, logdir),
        Checkpoints(model, out_dir, monitor=monitor, done=done),
        keras.callbacks.CSVLogger(str(out_dir / artifacts.HISTORY_CSV), append=resuming),
        *schedule_callbacks(config, has_val=has_val, done=done),
        # Kept after the run so `--resume --epochs N` can extend a finished run.
        keras.callbacks.BackupAndRestore(str(out_dir / artifacts.BACKUP_DIR), double_checkpoint=True,
                                         delete_checkpoint=False),
    ]


