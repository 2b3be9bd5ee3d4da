"""A training run: config, data pipeline, callbacks, checkpoints, resume, model directory.

``train_model`` turns a ``TrainConfig`` and the prepared files into a self-contained
model directory (``model.keras``, ``config.json``, ``vocabulary.json``,
``answers.json``, history) that ``load_model_dir`` reads back in Keras safe mode.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from vqa import artifacts, data, distribute, models
from vqa.atomic import write_atomically, write_text_atomically
from vqa.errors import InputError, ResourceError

MODEL_KINDS = ("mlp", "lstm", "san")
# The tutorial's per-model values; everything else is shared.
# Input scaling (see docs/training.md "Input scaling"): spaCy 3 vectors are ~50x larger than an fc7
# vector, so the MLP normalises both inputs; the LSTM normalises the image only.
TUTORIAL_DEFAULTS = {
    "mlp": {"epochs": 100, "batch_size": 128, "norm_question": True, "norm_image": True, "bucket": False,
            "standardize_question": True, "dropout": 0.3},
    "lstm": {"epochs": 90, "batch_size": 256, "norm_question": False, "norm_image": True, "bucket": True,
             "standardize_question": False, "lstm_dropout": 0.2},
    # The tutorial's "way forward": Yang et al. 2016's sizes on VQA (LSTM d = 1024, 2 attention layers,
    # batch 100); k, the epochs and the word-vector norm are ours (docs/attention.md).
    "san": {"epochs": 30, "batch_size": 100, "norm_question": True, "norm_image": False, "bucket": True,
            "standardize_question": False, "lstm_units": 1024, "lstm_layers": 1},
}
# The image layout each model reads (`vqa features` writes "vector" = fc7, `--grid` writes "grid").
IMAGE_LAYOUTS = {"mlp": artifacts.LAYOUT_VECTOR, "lstm": artifacts.LAYOUT_VECTOR, "san": artifacts.LAYOUT_GRID}
# The tutorial's raw inputs (--tutorial-inputs) and its whole recipe (--tutorial-recipe): each default
# that departs from it, set back (docs/training.md "Departures", docs/real-questions.md for the tables).
TUTORIAL_INPUTS = {"norm_question": False, "norm_image": False, "standardize_image": False,
                   "standardize_question": False}
TUTORIAL_RECIPE = {**TUTORIAL_INPUTS, "dropout": 0.5, "optimizer": "rmsprop", "epsilon": 1e-7, "clipnorm": None,
                   "weight_decay": 0.0, "lr_schedule": "none", "first_initializer": models.KERNEL_INITIALIZER,
                   "initializer": models.KERNEL_INITIALIZER, "first_dropout": None, "lstm_dropout": 0.0}
LR_SCHEDULES = ("none", "plateau")
# Fields that may change between an interrupted run and its resumption.
RUNTIME_FIELDS = ("epochs", "steps_per_epoch", "distribute", "mixed_precision", "jit", "update_freq", "verbose")


@dataclass(frozen=True)
class TrainConfig:
    """One training run: the tutorial's sizes; its inputs and recipe are ``TUTORIAL_RECIPE`` away.

    Per-model defaults come from ``TrainConfig.tutorial``; the fields that depart from the tutorial
    (input scaling, optimiser, schedule) are listed in ``TUTORIAL_RECIPE``.
    """

    model: str = "mlp"
    epochs: int = 100
    batch_size: int = 128
    seed: int | None = None
    hidden_units: int = 1024
    hidden_layers: int = 3
    lstm_units: int = 512
    lstm_layers: int = 3
    dropout: float = 0.5
    activation: str = "tanh"
    learning_rate: float = 0.001
    norm_question: bool = True
    norm_image: bool = True
    standardize_image: bool = True
    bucket: bool = False
    update_freq: int = 100
    distribute: str | None = None
    mixed_precision: bool = False
    jit: str = "auto"
    verbose: str | int = "auto"
    optimizer: str = "adam"
    epsilon: float = 1e-7
    clipnorm: float | None = None
    weight_decay: float = 0.0
    lr_schedule: str = "plateau"
    first_initializer: str = models.KERNEL_INITIALIZER
    initializer: str = models.KERNEL_INITIALIZER
    first_dropout: float | None = None
    lstm_dropout: float = 0.0
    standardize_question: bool = True
    steps_per_epoch: int | None = None
    attention_units: int = 512
    attention_layers: int = 2
    coordinates: bool = True

    @classmethod
    def tutorial(cls, model: str, *, tutorial_inputs: bool = False, tutorial_recipe: bool = False,
                 **overrides) -> "TrainConfig":
        """The default config for ``model`` ("mlp"|"lstm"|"san"), with non-None ``overrides`` applied.

        Args:
            model: "mlp", "lstm" or "san".
            tutorial_inputs: start from the tutorial's raw inputs (no standardisation, no L2 norms).
            tutorial_recipe: start from the tutorial's whole recipe (raw inputs, RMSprop, its
                initialisers and dropout, no schedule): every departure set back.
            overrides: field values; None keeps the default.
        """
        if model not in MODEL_KINDS:
            raise InputError(f"unknown model {model!r}; choose one of {', '.join(MODEL_KINDS)}")
        preset = TUTORIAL_RECIPE if tutorial_recipe else TUTORIAL_INPUTS if tutorial_inputs else {}
        values = {**TUTORIAL_DEFAULTS[model], **preset, **{k: v for k, v in overrides.items() if v is not None}}
        return cls(model=model, **values).validated()

    def validated(self) -> "TrainConfig":
        """This config, or InputError naming the first bad value."""
        checks = [(self.model in MODEL_KINDS, f"model must be one of {MODEL_KINDS}"),
                  (self.epochs >= 1, "--epochs must be >= 1"), (self.batch_size >= 1, "--batch-size must be >= 1"),
                  (0 <= self.dropout < 1, "--dropout must be in [0, 1)"),
                  (self.hidden_layers >= 0 and self.lstm_layers >= 1, "layer counts must be >= 0 (LSTM >= 1)"),
                  (self.distribute in (None, *distribute.STRATEGIES), f"--distribute: {'|'.join(distribute.STRATEGIES)}"),
                  (self.jit in ("auto", "on", "off"), "--jit must be auto, on or off"),
                  (self.optimizer in models.OPTIMIZERS, f"--optimizer must be one of {', '.join(models.OPTIMIZERS)}"),
                  (self.lr_schedule in LR_SCHEDULES, f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}"),
                  (self.epsilon > 0 and (self.clipnorm is None or self.clipnorm > 0), "--epsilon/--clipnorm must be > 0"),
                  (self.first_dropout is None or 0 <= self.first_dropout < 1, "--first-dropout must be in [0, 1)"),
                  (0 <= self.lstm_dropout < 1, "--lstm-dropout must be in [0, 1)"),
                  (self.weight_decay >= 0, "--weight-decay must be >= 0"),
                  (self.steps_per_epoch is None or self.steps_per_epoch >= 1, "--steps-per-epoch must be >= 1"),
                  (self.attention_units >= 1 and self.attention_layers >= 1,
                   "--attention-units and --attention-layers must be >= 1")]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        return self


# --------------------------------------------------------------------------- model directory
def _run_identity(record: dict, *, with_epochs: bool = True) -> dict:
    """The parts of a config.json that define a run (not where or how fast it ran)."""
    ignored = set(RUNTIME_FIELDS) - ({"epochs"} if with_epochs else set())
    # A field added since the run was written counts as its default (what that run used).
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
    train = {k: v for k, v in {**defaults, **record.get("train", {})}.items() if k not in ignored}
    facts = {k: record.get(k) for k in ("num_answers", "vocabulary_size", "image_feature_dim", "image_layout",
                                        "image_feature_shape")}
    return {"train": train, **facts}


def _claim_model_dir(out_dir: Path, *, overwrite: bool) -> None:
    """Make ``out_dir`` (already passed by ``_check_out_dir``) ready for this run."""
    if overwrite:
        _remove_run(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)


def _check_out_dir(out_dir: Path, record: dict, *, resume: bool, overwrite: bool) -> None:
    """InputError unless ``out_dir`` may take this run; reads, writes nothing.

    The same run (same config) continues where it stopped; a run that differs only in
    ``epochs`` needs ``resume``; any other difference needs ``overwrite``. Every worker of a
    cluster runs it on the shared ``--out`` before the cluster forms, so that all of them stop
    with the same line, not only the chief that would write there.
    """
    config_path = out_dir / artifacts.CONFIG_JSON
    if overwrite:
        return
    if config_path.is_file():
        old = json.loads(config_path.read_text(encoding="utf-8"))
        if _run_identity(old, with_epochs=False) != _run_identity(record, with_epochs=False):
            raise InputError(f"{out_dir}: holds a different run (other model or settings); "
                             "choose another --out or pass --overwrite to replace it")
        if _run_identity(old) != _run_identity(record) and not resume:
            raise InputError(f"{out_dir}: holds this run with other --epochs; pass --resume to continue it "
                             "or --overwrite to start again")
    elif out_dir.is_dir() and any(out_dir.iterdir()):
        raise InputError(f"{out_dir}: not empty and not a model directory; choose another --out or pass --overwrite")


def _remove_run(out_dir: Path) -> None:
    """Delete the files a run writes (and nothing else) from ``out_dir``."""
    names = (artifacts.MODEL_FILE, artifacts.BEST_MODEL_FILE, artifacts.CONFIG_JSON, artifacts.VOCABULARY_JSON,
             artifacts.ANSWERS_JSON, artifacts.HISTORY_CSV, artifacts.HISTORY_JSON)
    for name in names:
        (out_dir / name).unlink(missing_ok=True)
    shutil.rmtree(out_dir / artifacts.BACKUP_DIR, ignore_errors=True)


def _run_record(config: TrainConfig, prepared: data.PreparedData, features_info: dict, status: str) -> dict:
    """config.json: the TrainConfig plus the preprocessing facts inference needs.

    ``image_layout`` ("vector" or "grid"), ``image_size`` and ``image_feature_shape`` tell
    inference which features to compute for a new image (``vqa features`` with or without ``--grid``).
    """
    shape = [int(n) for n in features_info["shape"][1:]]
    return {"model": config.model, "status": status, "train": dataclasses.asdict(config),
            "max_question_length": prepared.max_question_length, "norm_image": config.norm_image,
            "standardize_image": config.standardize_image,
            "norm_question": config.norm_question, "spacy_model": prepared.spacy_model,
            "num_answers": len(prepared.answers), "vocabulary_size": len(prepared.words),
            "image_feature_dim": shape[-1], "image_layout": features_info["layout"],
            "image_size": int(features_info["image_size"]), "image_feature_shape": shape,
            "cnn_weights": features_info.get("cnn_weights"), "keras_version": keras.__version__}


def _history_from_csv(path: Path) -> dict[str, list[float]]:
    """history.csv (all epochs, across resumptions) as {metric: [per-epoch values]}."""
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return {key: [float(row[key]) for row in rows if row.get(key) not in (None, "")] for key in (rows[0] if rows else {})}


def _save_outputs(model: keras.Model, out_dir: Path, record: dict, prepared: data.PreparedData) -> dict:
    """Write model.keras, vocabulary/answers/config/history JSON atomically; return the history."""
    write_atomically(out_dir / artifacts.MODEL_FILE, model.save)
    write_text_atomically(out_dir / artifacts.VOCABULARY_JSON, json.dumps(prepared.words, ensure_ascii=False))
    write_text_atomically(out_dir / artifacts.ANSWERS_JSON, json.dumps(prepared.answers, ensure_ascii=False, indent=0))
    history = _history_from_csv(out_dir / artifacts.HISTORY_CSV)
    write_text_atomically(out_dir / artifacts.HISTORY_JSON, json.dumps(history, indent=1))
    write_text_atomically(out_dir / artifacts.CONFIG_JSON, json.dumps(record, indent=2))
    return history


def load_model_dir(model_dir: Path, *, best: bool = False) -> tuple[keras.Model, dict, list[str], list[str]]:
    """Load a model directory written by ``train_model`` (Keras safe mode, no pickle).

    Args:
        model_dir: the directory.
        best: load ``best.keras`` (lowest validation loss) instead of the last epoch's model.
    Returns:
        (model, config dict (config.json), vocabulary list (token id = position),
        answers list (label i = answers[i])). ``model.predict`` returns {"answer": float32 (N, K)}.
    """
    model_dir = Path(model_dir)
    paths = [model_dir / n for n in (artifacts.CONFIG_JSON, artifacts.VOCABULARY_JSON, artifacts.ANSWERS_JSON)]
    model_path = model_dir / (artifacts.BEST_MODEL_FILE if best else artifacts.MODEL_FILE)
    missing = [p.name for p in paths + [model_path] if not p.is_file()]
    if missing:
        raise InputError(f"{model_dir}: not a finished model directory (missing {', '.join(missing)}); "
                         "run 'vqa train' first")
    config, words, answers = (json.loads(p.read_text(encoding="utf-8")) for p in paths)
    try:
        model = keras.saving.load_model(model_path, safe_mode=True)  # models.py registered MaskedSum
    except (OSError, ValueError) as error:
        raise ResourceError(f"{model_path}: cannot load ({error}); re-run 'vqa train'") from None
    return model, config, words, answers


# --------------------------------------------------------------------------- data and model
def _training_splits(data_dir: Path, features_path: Path, layout: str):
    """Load the prepared data and the features (of ``layout``); keep questions whose modal answer is in the top K."""
    prepared = data.load_prepared(data_dir)
    train_split = prepared.splits.get(artifacts.TRAIN_SPLIT)
    if train_split is None or train_split.labels is None:
        raise InputError(f"{data_dir}: no annotated {artifacts.TRAIN_SPLIT} split; run 'vqa prepare' with train files")
    features, image_ids = data.load_features(features_path, layout=layout)
    splits = {name: s for name, s in prepared.splits.items() if s.labels is not None}
    for name, split in splits.items():
        if split.labels.max(initial=-1) >= len(prepared.answers) or split.token_ids.max(initial=0) >= len(prepared.words):
            raise InputError(f"{data_dir}: {name} labels or token ids exceed the answers/vocabulary; re-run 'vqa prepare'")
    rows = {name: data.feature_rows(s.image_ids, image_ids, source=features_path) for name, s in splits.items()}
    return prepared, features, splits, rows


def _make_dataset(split, features, rows, config: TrainConfig, *, shuffle: bool, seed,
                  shard: tuple[int, int] = (0, 1)):
    """Batches of the questions with a top-K label (this worker's ``shard`` of each batch)."""
    keep = split.labels >= 0
    if not keep.any():
        raise InputError(f"split {split.name!r}: no question has its modal answer among the top K")
    return data.QuestionBatches(split.select(keep), features, rows[keep], batch_size=config.batch_size,
                                shuffle=shuffle, bucket=config.bucket, seed=seed, shard=shard)


def build_model(config: TrainConfig, *, embeddings: np.ndarray, num_answers: int,
                image_shape: tuple[int, ...] | int,
                image_statistics: tuple[np.ndarray, np.ndarray] | None = None,
                question_statistics: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[keras.Model, keras.Model]:
    """The config's model (``models.build_mlp`` / ``build_lstm`` / ``build_san``) and its compiled training view.

    Args:
        config: the run.
        embeddings: float32 (V, 300) word vectors.
        num_answers: K.
        image_shape: one image's features: (D,) for fc7 vectors, (S, S, C) for a grid (an int = (D,)).
        image_statistics: (mean, variance) float32 (D,) (or (C,) per grid channel) of the training
            images, used when ``config.standardize_image``.
        question_statistics: (mean, variance) float32 (300,) of the training questions' word-vector
            sums (``data.question_statistics``), used by the MLP when ``config.standardize_question``.
    Returns:
        (model, trainer): the model to save (inputs "question", "image_features"; outputs "answer",
        and "attention" for the SAN) and the compiled model ``fit`` runs, which shares its
        layers and outputs only "answer" (the same object for the MLP and the LSTM).
    """
    image_shape = (image_shape,) if isinstance(image_shape, int) else tuple(image_shape)
    statistics = image_statistics if config.standardize_image else None
    jit = {"auto": "auto", "on": True, "off": False}[config.jit]
    if config.model == "san":
        model = models.build_san(embeddings=embeddings, num_answers=num_answers, grid_size=image_shape[0],
                                 channels=image_shape[-1], question_units=config.lstm_units,
                                 question_layers=config.lstm_layers,
                                 attention_units=config.attention_units, attention_layers=config.attention_layers,
                                 dropout=config.dropout, coordinates=config.coordinates,
                                 norm_question=config.norm_question, image_statistics=statistics)
    else:
        model = _build_tutorial_model(config, embeddings=embeddings, num_answers=num_answers,
                                      image_dim=image_shape[0], image_statistics=statistics,
                                      question_statistics=question_statistics)
    trainer = models.answer_only(model)
    models.compile_model(trainer, learning_rate=config.learning_rate, jit_compile=jit, optimizer=config.optimizer,
                         epsilon=config.epsilon, clipnorm=config.clipnorm, weight_decay=config.weight_decay)
    return model, trainer


def _build_tutorial_model(config: TrainConfig, *, embeddings, num_answers, image_dim, image_statistics,
                          question_statistics) -> keras.Model:
    """The MLP or the LSTM of ``config`` (uncompiled)."""
    shared = dict(embeddings=embeddings, num_answers=num_answers, image_dim=image_dim,
                  hidden_units=config.hidden_units, hidden_layers=config.hidden_layers, dropout=config.dropout,
                  activation=config.activation, norm_question=config.norm_question, norm_image=config.norm_image,
                  image_statistics=image_statistics, kernel_initializer=config.initializer)
    if config.model == "mlp":
        return models.build_mlp(first_initializer=config.first_initializer, first_dropout=config.first_dropout,
                                question_statistics=question_statistics if config.standardize_question else None,
                                **shared)
    return models.build_lstm(lstm_units=config.lstm_units, lstm_layers=config.lstm_layers,
                             lstm_dropout=config.lstm_dropout, **shared)


def resolve_verbose(verbose: str | int, stream=None) -> int:
    """Keras' verbosity for ``verbose``: "auto" is the progress bar (1) on a terminal, else one
    line per epoch (2), so GPU-job logs hold no progress-bar redraws."""
    if verbose != "auto":
        return int(verbose)
    stream = sys.stdout if stream is None else stream
    return 1 if getattr(stream, "isatty", lambda: False)() else 2


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


def _strategy_scope(strategy):
    """The scope that places variables for ``distribute.make_strategy``'s result, else a no-op."""
    return contextlib.nullcontext() if strategy is None else strategy.scope()


@contextlib.contextmanager
def _dtype_policy(mixed_precision: bool):
    """Build layers under mixed_float16 when asked, restoring the global policy after."""
    previous = keras.config.dtype_policy()
    if mixed_precision:
        keras.config.set_dtype_policy("mixed_float16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _train_question_statistics(config: TrainConfig, prepared, splits):
    """The MLP's question statistics over the top-K training questions, when it standardises them."""
    if config.model != "mlp" or not config.standardize_question:
        return None
    train = splits[artifacts.TRAIN_SPLIT]
    return data.question_statistics(prepared.embeddings, train.token_ids[train.labels >= 0])


# --------------------------------------------------------------------------- callbacks
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
    """

    def __init__(self, model: keras.Model, out_dir: Path, *, monitor: str):
        super().__init__()
        self.full_model, self.out_dir, self.monitor = model, Path(out_dir), monitor
        self.best = float("inf")

    def on_epoch_end(self, epoch, logs=None):
        write_atomically(self.out_dir / artifacts.MODEL_FILE, self.full_model.save)
        value = (logs or {}).get(self.monitor)
        if value is not None and float(value) < self.best:
            self.best = float(value)
            write_atomically(self.out_dir / artifacts.BEST_MODEL_FILE, self.full_model.save)


def _callbacks(config: TrainConfig, model: keras.Model, out_dir: Path, logdir: Path, *, has_val: bool,
               coverage: float, resuming: bool, sample: dict | None = None):
    """The run's callback list; order matters (the metrics and timer first, so loggers see them;
    the schedule before the backup, so a backup holds the rate the next epoch runs at).

    ``sample``: inputs of one batch on which a model with attention reports its entropy.
    """
    monitor = "val_loss" if has_val else "loss"
    done = _history_from_csv(out_dir / artifacts.HISTORY_CSV).get(monitor, []) if resuming else []
    return [
        ModalAccuracy(coverage),
        *([AttentionEntropy(model, sample)] if sample is not None else []),
        EpochTimer(),
        keras.callbacks.TerminateOnNaN(),
        tensorboard_callback(config, logdir),
        Checkpoints(model, out_dir, monitor=monitor),
        keras.callbacks.CSVLogger(str(out_dir / artifacts.HISTORY_CSV), append=resuming),
        *schedule_callbacks(config, has_val=has_val, done=done),
        # Kept after the run so `--resume --epochs N` can extend a finished run.
        keras.callbacks.BackupAndRestore(str(out_dir / artifacts.BACKUP_DIR), double_checkpoint=True,
                                         delete_checkpoint=False),
    ]


# --------------------------------------------------------------------------- the run
def _steps_per_epoch(config: TrainConfig, train_set) -> int | None:
    """``--steps-per-epoch``, capped at the batches of one pass over the train split (None: one pass)."""
    if config.steps_per_epoch is None:
        return None
    return min(config.steps_per_epoch, len(train_set))


def seed_everything(seed: int | None) -> None:
    """Seed Python, NumPy and the backend; on TensorFlow also make ops deterministic."""
    if seed is None:
        return
    keras.utils.set_random_seed(seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def train_model(config: TrainConfig, *, data_dir: Path, features_path: Path, out_dir: Path,
                logdir: Path = Path(artifacts.DEFAULT_LOGDIR), resume: bool = False, overwrite: bool = False,
                extra_callbacks: tuple = ()) -> dict[str, list[float]]:
    """Train ``config``'s model and write a self-contained model directory.

    Args:
        config: the run (``TrainConfig.tutorial("mlp"|"lstm"|"san", ...)``).
        data_dir: folder with ``vqa_data.h5`` (``vqa prepare``).
        features_path: image-features HDF5 (``vqa features``; with ``--grid`` for the SAN).
        out_dir: model directory to write; an interrupted run there resumes at its last epoch.
        logdir: TensorBoard log folder.
        resume: continue a run in ``out_dir`` whose config differs only in epochs/runtime flags.
        overwrite: replace whatever run ``out_dir`` holds.
        extra_callbacks: more Keras callbacks, run after the built-in ones.
    Returns:
        The history over all epochs of the run: {metric name: list of float per epoch}.
    """
    config.validated()
    role = distribute.cluster_role(config.distribute)  # a bad TF_CONFIG fails before anything is written
    distribute.check_backend(config.distribute, keras.backend.backend())
    layout = IMAGE_LAYOUTS[config.model]
    prepared, features, splits, rows = _training_splits(Path(data_dir), Path(features_path), layout)
    record = _run_record(config, prepared, data.features_info(features_path), status="running")
    _check_out_dir(Path(out_dir), record, resume=resume, overwrite=overwrite)  # on every worker
    strategy = distribute.make_strategy(config.distribute, role)  # waits for every worker (VQA_CLUSTER_TIMEOUT)
    # Only the chief writes --out and --logdir; other workers write to temporary folders.
    out_dir, logdir = distribute.worker_paths(Path(out_dir), Path(logdir), role, fresh=overwrite)
    _claim_model_dir(out_dir, overwrite=overwrite)
    write_text_atomically(out_dir / artifacts.CONFIG_JSON, json.dumps(record, indent=2))
    seed_everything(config.seed)
    train_set = _make_dataset(splits[artifacts.TRAIN_SPLIT], features, rows[artifacts.TRAIN_SPLIT], config,
                              shuffle=True, seed=distribute.shuffle_seed(config.seed, role), shard=role.shard)
    val = splits.get(artifacts.VAL_SPLIT)
    val_set = None if val is None else _make_dataset(val, features, rows[artifacts.VAL_SPLIT], config,
                                                     shuffle=False, seed=None, shard=role.shard)
    coverage = 0.0 if val is None else float(np.mean(val.labels >= 0))
    statistics = data.image_statistics(features, rows[artifacts.TRAIN_SPLIT]) if config.standardize_image else None
    with _strategy_scope(strategy), _dtype_policy(config.mixed_precision):
        model, trainer = build_model(config, embeddings=prepared.embeddings, num_answers=len(prepared.answers),
                                     image_shape=features.shape[1:], image_statistics=statistics,
                                     question_statistics=_train_question_statistics(config, prepared, splits))
    resuming = (out_dir / artifacts.BACKUP_DIR / "training_metadata.json").is_file()
    sample = None
    if model is not trainer:  # the SAN: its attention output is watched on one fixed batch
        sample = (val_set or train_set)[0][0]
    callbacks = _callbacks(config, model, out_dir, Path(logdir), has_val=val_set is not None, coverage=coverage,
                           resuming=resuming, sample=sample) + list(extra_callbacks)
    train_feed = distribute.feed(strategy, role, train_set)
    if strategy is None:  # one device: batches gathered inside TensorFlow when the features fit
        in_graph = data.in_graph_batches(train_set)
        train_feed = train_set if in_graph is None else in_graph
    callbacks += distribute.callbacks(role, train_feed, total=len(train_set.split.token_ids))
    with distribute.fit_scope(trainer, strategy, sample=train_set[0]):
        trainer.fit(train_feed, validation_data=distribute.feed(strategy, role, val_set), epochs=config.epochs,
                  steps_per_epoch=_steps_per_epoch(config, train_set), callbacks=callbacks,
                  shuffle=False,  # the batches reshuffle themselves every epoch
                  verbose=resolve_verbose(config.verbose))
    return _save_outputs(model, out_dir, {**record, "status": "finished"}, prepared)
