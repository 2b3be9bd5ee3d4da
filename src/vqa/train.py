"""A training run: the data it reads, the model it builds, the feed and callbacks, and ``fit``.

``train_model`` turns a ``TrainConfig`` (``vqa.config``) and the prepared files into a
self-contained model directory (``vqa.modeldir`` owns its layout and writes it); the callbacks
live in ``vqa.callbacks``, the choice of input feed in ``vqa.data.training_feed``, the worker's role
in ``vqa.cluster`` and the strategy in ``vqa.distribute``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from pathlib import Path

import keras
import numpy as np

from vqa import artifacts, callbacks, cluster, data, distribute, models, modeldir
from vqa.config import IMAGE_LAYOUTS, RUNTIME_FIELDS, TrainConfig, field_defaults
from vqa.errors import InputError
from vqa.feature_file import FeaturesFile, load_features
from vqa.prepared import PreparedData, load_prepared

# --------------------------------------------------------------------------- model directory
def _run_identity(record: dict, *, with_epochs: bool = True) -> dict:
    """The parts of a config.json that define a run (not where or how fast it ran)."""
    ignored = set(RUNTIME_FIELDS) - ({"epochs"} if with_epochs else set())
    # A field added since the run was written counts as its default (what that run used).
    train = {k: v for k, v in {**field_defaults(), **record.get("train", {})}.items() if k not in ignored}
    facts = {k: record.get(k) for k in ("num_answers", "vocabulary_size", "image_layout", "image_feature_shape")}
    return {"train": train, **facts}


def _same_run(record: dict):
    """``modeldir.check_out_dir``'s test: is an existing config.json this run (epochs compared or not)?"""
    return lambda old, with_epochs: _run_identity(old, with_epochs=with_epochs) == _run_identity(
        record, with_epochs=with_epochs)


def _run_record(config: TrainConfig, prepared: PreparedData, features_file: FeaturesFile, status: str) -> dict:
    """config.json: the TrainConfig plus the preprocessing facts inference needs.

    ``image_layout`` ("vector" or "grid"), ``image_size`` and ``image_feature_shape`` tell
    inference which features to compute for a new image (``vqa features`` with or without ``--grid``);
    ``cnn_identity``, the features file's, which VGG16 weights may compute them (`vqa.features.check_cnn_weights`).
    """
    return modeldir.make_config(
        model=config.model, status=status, train=dataclasses.asdict(config),
        max_question_length=prepared.max_question_length, spacy_model=prepared.spacy_model,
        word_vectors_sha256=prepared.word_vectors_sha256 or None, num_answers=len(prepared.answers),
        vocabulary_size=len(prepared.words),
        image_layout=features_file.layout, image_size=features_file.image_size,
        image_feature_shape=features_file.shape[1:], cnn_weights=features_file.cnn_weights,
        cnn_identity=features_file.cnn_identity.record(), keras_version=keras.__version__)


# --------------------------------------------------------------------------- data and model
def _training_splits(data_dir: Path, features_path: Path, layout: str, *, scores: bool = False):
    """Load the prepared data (with the soft targets when ``scores``) and the features (of ``layout``)."""
    prepared = load_prepared(data_dir, scores=scores)
    train_split = prepared.splits.get(artifacts.TRAIN_SPLIT)
    if train_split is None or train_split.labels is None:
        raise InputError(f"{data_dir}: no annotated {artifacts.TRAIN_SPLIT} split; run 'vqa prepare' with train files")
    features, image_ids = load_features(features_path, layout=layout)
    splits = {name: s for name, s in prepared.splits.items() if s.labels is not None}
    for name, split in splits.items():
        top_class = max(split.labels.max(initial=-1), -1 if split.scores is None else split.scores.classes.max(initial=-1))
        if top_class >= len(prepared.answers) or split.token_ids.max(initial=0) >= len(prepared.words):
            raise InputError(f"{data_dir}: {name} labels or token ids exceed the answers/vocabulary; re-run 'vqa prepare'")
    rows = {name: data.feature_rows(s.image_ids, image_ids, source=features_path) for name, s in splits.items()}
    return prepared, features, splits, rows


def _make_dataset(split, features, rows, config: TrainConfig, *, shuffle: bool, seed, num_answers: int,
                  shard: tuple[int, int] = (0, 1)):
    """Batches of the questions with a top-K label (this worker's ``shard`` of each batch); under
    ``--loss soft`` the same questions, with their soft targets over the ``num_answers`` classes."""
    keep = split.labels >= 0
    if not keep.any():
        raise InputError(f"split {split.name!r}: no question has its modal answer among the top K")
    return data.QuestionBatches(split.select(keep), features, rows[keep], batch_size=config.batch_size,
                                shuffle=shuffle, bucket=config.bucket, seed=seed, shard=shard,
                                num_answers=num_answers if config.loss == "soft" else None)


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
    output = {"output_activation": models.OUTPUT_ACTIVATIONS[config.loss]}
    if config.model in ("san", "topdown"):
        build = models.build_san if config.model == "san" else models.build_topdown
        model = build(embeddings=embeddings, num_answers=num_answers, grid_size=image_shape[0],
                      channels=image_shape[-1], question_units=config.lstm_units, question_layers=config.lstm_layers,
                      attention_units=config.attention_units, attention_layers=config.attention_layers,
                      dropout=config.dropout, coordinates=config.coordinates,
                      norm_question=config.norm_question, image_statistics=statistics, **output)
    else:
        model = _build_tutorial_model(config, embeddings=embeddings, num_answers=num_answers,
                                      image_dim=image_shape[0], image_statistics=statistics,
                                      question_statistics=question_statistics, **output)
    trainer = models.answer_only(model)
    models.compile_model(trainer, learning_rate=config.learning_rate, jit_compile=jit, optimizer=config.optimizer,
                         epsilon=config.epsilon, clipnorm=config.clipnorm, weight_decay=config.weight_decay,
                         loss=config.loss)
    return model, trainer


def _build_tutorial_model(config: TrainConfig, *, embeddings, num_answers, image_dim, image_statistics,
                          question_statistics, output_activation) -> keras.Model:
    """The MLP or the LSTM of ``config`` (uncompiled)."""
    shared = dict(embeddings=embeddings, num_answers=num_answers, image_dim=image_dim,
                  output_activation=output_activation,
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
        config: the run (``TrainConfig.for_model("mlp"|"lstm"|"san", ...)``).
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
    role = cluster.cluster_role(config.distribute)  # a bad TF_CONFIG fails before anything is written
    distribute.check_backend(config.distribute, keras.backend.backend())
    prepared, features, splits, rows = _training_splits(Path(data_dir), Path(features_path),
                                                        IMAGE_LAYOUTS[config.model], scores=config.loss == "soft")
    record = _run_record(config, prepared, FeaturesFile.open(features_path), status="running")
    modeldir.check_out_dir(Path(out_dir), _same_run(record), resume=resume, overwrite=overwrite)  # on every worker
    strategy = distribute.make_strategy(config.distribute, role)  # waits for every worker (VQA_CLUSTER_TIMEOUT)
    # Only the chief writes --out and --logdir; other workers write to temporary folders.
    out_dir, logdir = cluster.worker_paths(Path(out_dir), Path(logdir), role, fresh=overwrite)
    modeldir.claim(out_dir, overwrite=overwrite)
    modeldir.write_config(out_dir, record)
    seed_everything(config.seed)
    train_set, val_set, coverage = _datasets(config, splits, features, rows, role, len(prepared.answers))
    statistics = data.image_statistics(features, rows[artifacts.TRAIN_SPLIT]) if config.standardize_image else None
    with _strategy_scope(strategy), _dtype_policy(config.mixed_precision):
        model, trainer = build_model(config, embeddings=prepared.embeddings, num_answers=len(prepared.answers),
                                     image_shape=features.shape[1:], image_statistics=statistics,
                                     question_statistics=_train_question_statistics(config, prepared, splits))
    resuming = (out_dir / artifacts.BACKUP_DIR / "training_metadata.json").is_file()
    # The SAN (whose trainer is a view of the model) reports its attention's entropy on one fixed batch.
    sample = None if model is trainer else (val_set or train_set)[0][0]
    run_callbacks = callbacks.training_callbacks(config, model, out_dir, Path(logdir), has_val=val_set is not None,
                                                 coverage=coverage, resuming=resuming, sample=sample)
    train_feed = data.training_feed(strategy, role, train_set)
    run_callbacks += [*list(extra_callbacks), *data.feed_callbacks(role, train_feed, total=len(train_set.split.token_ids))]
    with distribute.fit_scope(trainer, strategy, sample=train_set[0]):
        trainer.fit(train_feed, validation_data=data.feed(strategy, role, val_set), epochs=config.epochs,
                    steps_per_epoch=_steps_per_epoch(config, train_set), callbacks=run_callbacks,
                    shuffle=False,  # the batches reshuffle themselves every epoch
                    verbose=resolve_verbose(config.verbose))
    return modeldir.save_model_dir(out_dir, model, config={**record, "status": "finished"}, words=prepared.words,
                                   answers=prepared.answers)


def _datasets(config: TrainConfig, splits, features, rows, role, num_answers: int):
    """(train batches, val batches or None, the fraction of val questions with a top-K answer)."""
    train_set = _make_dataset(splits[artifacts.TRAIN_SPLIT], features, rows[artifacts.TRAIN_SPLIT], config,
                              shuffle=True, seed=cluster.shuffle_seed(config.seed, role), shard=role.shard,
                              num_answers=num_answers)
    val = splits.get(artifacts.VAL_SPLIT)
    if val is None:
        return train_set, None, 0.0
    val_set = _make_dataset(val, features, rows[artifacts.VAL_SPLIT], config, shuffle=False, seed=None,
                            shard=role.shard, num_answers=num_answers)
    return train_set, val_set, float(np.mean(val.labels >= 0))
