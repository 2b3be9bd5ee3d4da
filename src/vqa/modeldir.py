"""The model directory: its layout, its config.json schema, and every write, check and load of it.

``vqa train`` writes a self-contained directory; ``vqa evaluate --model``, ``vqa ask``,
``vqa export``, the server and the benchmarks read it, all through this module::

    model.keras      the last epoch's whole model (Keras format, loaded in safe mode)
    best.keras       the epoch with the lowest monitored loss over the whole run
    config.json      the run's settings and the facts inference needs (schema below)
    vocabulary.json  token id i = word i;   answers.json  label i = answer i
    history.csv      one row per epoch, across resumptions;   history.json  the same as lists
    backup/          BackupAndRestore state, so that ``--resume`` continues the run

config.json holds each value once: ``format`` (``FORMAT``), ``model``, ``status``
("running" | "finished"), ``train`` (every ``TrainConfig`` field; a ``loss`` missing from an
older run reads as "modal", an unknown one is an error), and the data facts
``max_question_length``, ``spacy_model``, ``word_vectors_sha256``, ``num_answers``, ``vocabulary_size``,
``image_layout``, ``image_size``, ``image_feature_shape``, ``cnn_weights``, ``cnn_identity``
(``{"kind", "sha256"}``: which VGG16 weights made the training features, as the features file recorded
it; "unknown" in directories written before it was), ``keras_version``.
Directories written before ``format`` existed (format 1: the three input-scaling flags repeated
beside ``train``, ``image_feature_dim`` instead of ``image_feature_shape``) are read as format 2.

Nothing here imports Keras until a model file is loaded or saved, so checks stay light.
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vqa import artifacts
from vqa.atomic import write_atomically, write_json_atomically, write_text_atomically
from vqa.config import CHECKPOINT, LOSSES
from vqa.errors import InputError, ResourceError

if TYPE_CHECKING:
    from vqa.feature_file import CNNIdentity

FORMAT = 2
# Which file answers for each ``--checkpoint``.
CHECKPOINTS = {"last": artifacts.MODEL_FILE, "best": artifacts.BEST_MODEL_FILE}
# What inference needs besides the checkpoint.
INFERENCE_FILES = (artifacts.CONFIG_JSON, artifacts.VOCABULARY_JSON, artifacts.ANSWERS_JSON)
# Everything a run writes, and nothing else (``--overwrite`` deletes exactly these).
RUN_FILES = (*CHECKPOINTS.values(), *INFERENCE_FILES, artifacts.HISTORY_CSV, artifacts.HISTORY_JSON)
# config.json fields that have no default: a file without one cannot be used.
REQUIRED_FIELDS = ("model", "train", "num_answers", "vocabulary_size", "image_feature_shape")
# The values a field had before it was recorded (what an older run used).
FIELD_DEFAULTS = {"status": "finished", "max_question_length": artifacts.MAX_QUESTION_LENGTH,
                  "spacy_model": None, "word_vectors_sha256": None, "image_layout": artifacts.LAYOUT_VECTOR,
                  "image_size": artifacts.FC7_IMAGE_SIZE, "cnn_weights": None,
                  "cnn_identity": {"kind": artifacts.CNN_UNKNOWN, "sha256": None}, "keras_version": None}
# Format 1 repeated these TrainConfig fields at the top level.
_FORMAT_1_REPEATS = ("norm_image", "standardize_image", "norm_question")


@dataclass(frozen=True)
class LoadedModel:
    """A model directory read back: the Keras model and the JSON files beside it."""

    model: object  # keras.Model; outputs {"answer": float32 (N, K)} (+ "attention" for the SAN)
    config: dict  # config.json, upgraded to FORMAT
    words: list  # vocabulary: token id i = words[i]
    answers: list  # label i = answers[i]
    checkpoint_path: Path


# --------------------------------------------------------------------------- config.json
def make_config(*, model: str, status: str, train: dict, max_question_length: int, spacy_model: str | None,
                num_answers: int, vocabulary_size: int, image_layout: str, image_size: int,
                image_feature_shape: list[int], cnn_weights: str | None, keras_version: str,
                cnn_identity: dict | None = None, word_vectors_sha256: str | None = None) -> dict:
    """A config.json record of the current format (each value once); ``cnn_identity`` and
    ``word_vectors_sha256`` None: unknown."""
    return {"format": FORMAT, "model": model, "status": status, "train": dict(train),
            "max_question_length": int(max_question_length), "spacy_model": spacy_model,
            "word_vectors_sha256": word_vectors_sha256,
            "num_answers": int(num_answers), "vocabulary_size": int(vocabulary_size),
            "image_layout": image_layout, "image_size": int(image_size),
            "image_feature_shape": [int(n) for n in image_feature_shape], "cnn_weights": cnn_weights,
            "cnn_identity": dict(cnn_identity or FIELD_DEFAULTS["cnn_identity"]), "keras_version": keras_version}


def upgrade_config(record: dict, *, source: Path) -> dict:
    """``record`` (config.json as parsed) in the current format, defaults filled in.

    Raises:
        InputError: naming ``source`` and the field, for a newer format or a missing required field.
    """
    if not isinstance(record, dict):
        raise InputError(f"{source}: not a config.json object; re-run 'vqa train'")
    version = record.get("format", 1)
    if not isinstance(version, int) or version > FORMAT:
        raise InputError(f"{source}: field 'format' is {version!r}, newer than this vqa-keras reads ({FORMAT}); "
                         "upgrade vqa-keras")
    record = dict(record)
    if version == 1:
        record = _upgrade_format_1(record)
    for name in REQUIRED_FIELDS:
        if name not in record:
            raise InputError(f"{source}: field {name!r} is missing and has no default; re-run 'vqa train'")
    record["train"] = _checked_loss(record["train"], source=source)
    return {**FIELD_DEFAULTS, **record, "format": FORMAT}


def _checked_loss(train: dict, *, source: Path) -> dict:
    """``train`` with its ``loss`` ("modal" when a run predates the field); InputError for an unknown one."""
    if not isinstance(train, dict):
        raise InputError(f"{source}: field 'train' is not an object; re-run 'vqa train'")
    train = dict(train)
    loss = train.setdefault("loss", LOSSES[0])
    if loss not in LOSSES:
        raise InputError(f"{source}: field 'train.loss' is {loss!r}, not one of {', '.join(LOSSES)}; "
                         "re-run 'vqa train'")
    return train


def _upgrade_format_1(record: dict) -> dict:
    """Format 1 -> 2: drop the repeated input flags (``train`` holds them), shape from the dimension."""
    train = dict(record.get("train", {}))
    for name in _FORMAT_1_REPEATS:
        if name in record:
            train.setdefault(name, record.pop(name))
    if "train" in record:
        record["train"] = train
    dim = record.pop("image_feature_dim", None)
    if "image_feature_shape" not in record and dim is not None:
        record["image_feature_shape"] = [int(dim)]
    return record


def read_config(model_dir: Path) -> dict:
    """config.json of ``model_dir`` in the current format (no TensorFlow); InputError if unreadable."""
    path = Path(model_dir) / artifacts.CONFIG_JSON
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror}); run 'vqa train' first") from None
    except ValueError:
        raise InputError(f"{path}: not valid JSON; re-run 'vqa train'") from None
    return upgrade_config(record, source=path)


def read_cnn_identity(model_dir: Path) -> CNNIdentity:
    """config.json's ``cnn_identity`` as a `vqa.feature_file.CNNIdentity` (kind "unknown" for older directories)."""
    from vqa.feature_file import CNNIdentity  # h5py: only the commands that compute image features need it

    path = Path(model_dir) / artifacts.CONFIG_JSON
    return CNNIdentity.from_record(read_config(model_dir)["cnn_identity"], source=path)


def write_config(model_dir: Path, record: dict) -> None:
    """Write config.json atomically."""
    write_json_atomically(Path(model_dir) / artifacts.CONFIG_JSON, record, indent=2)


# --------------------------------------------------------------------------- checking and loading
def checkpoint_file(model_dir: Path, checkpoint: str = CHECKPOINT) -> Path:
    """The ``.keras`` file that answers for ``checkpoint`` ("last" or "best"); InputError if unknown."""
    if checkpoint not in CHECKPOINTS:
        raise InputError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}, got {checkpoint!r}")
    return Path(model_dir) / CHECKPOINTS[checkpoint]


def check_model_dir(model_dir: Path, *, checkpoint: str = CHECKPOINT) -> Path:
    """Check, without TensorFlow, that ``model_dir`` is a finished run holding ``checkpoint``.

    Returns:
        Path of the checkpoint's ``.keras`` file.
    Raises:
        InputError: an unknown checkpoint, a missing file, an unreadable or newer config.json,
        or a run that has not finished.
    """
    model_dir = Path(model_dir)
    path = checkpoint_file(model_dir, checkpoint)
    missing = [name for name in (*INFERENCE_FILES, artifacts.MODEL_FILE) if not (model_dir / name).is_file()]
    if missing:
        raise InputError(f"{model_dir}: not a finished model directory (missing {', '.join(missing)}); "
                         "run 'vqa train' first")
    status = read_config(model_dir)["status"]
    if status != "finished":
        raise InputError(f"{model_dir}: training has not finished (status {status!r}); wait for it, "
                         "or finish it with 'vqa train ... --resume'")
    if not path.is_file():
        raise InputError(f"{model_dir}: no {path.name} (the {checkpoint} checkpoint); "
                         f"use checkpoint 'last' ({artifacts.MODEL_FILE})")
    return path


def load_model_dir(model_dir: Path, *, checkpoint: str = CHECKPOINT) -> LoadedModel:
    """Load a finished model directory: the checkpoint in Keras safe mode (no pickle) and its JSON files.

    The directory is checked from its file names first, so that a bad one fails before TensorFlow loads.
    """
    from vqa.runtime import quiet_tensorflow

    path = check_model_dir(model_dir, checkpoint=checkpoint)
    quiet_tensorflow()  # before Keras is imported: a server's log stays clean
    words, answers = (json.loads((Path(model_dir) / name).read_text(encoding="utf-8"))
                      for name in (artifacts.VOCABULARY_JSON, artifacts.ANSWERS_JSON))
    return LoadedModel(load_keras_model(path), read_config(model_dir), words, answers, path)


def load_keras_model(path: Path):
    """One ``.keras`` file in safe mode; ResourceError naming it when Keras cannot read it."""
    import keras

    from vqa import models  # noqa: F401  (registers the project's layers for deserialisation)

    try:
        return keras.saving.load_model(path, safe_mode=True)
    except (OSError, ValueError) as error:
        raise ResourceError(f"{path}: cannot load ({error}); re-run 'vqa train'") from None


# --------------------------------------------------------------------------- writing a run
def check_out_dir(out_dir: Path, same_run, *, resume: bool, overwrite: bool) -> None:
    """InputError unless ``out_dir`` may take a run; reads, writes nothing.

    ``same_run(old_config, with_epochs)`` says whether the config.json already there is this run
    (with or without comparing the epochs). The same run continues where it stopped; one that
    differs only in epochs needs ``resume``; any other difference needs ``overwrite``.
    """
    out_dir = Path(out_dir)
    if overwrite:
        return
    if (out_dir / artifacts.CONFIG_JSON).is_file():
        old = read_config(out_dir)
        if not same_run(old, False):
            raise InputError(f"{out_dir}: holds a different run (other model or settings); "
                             "choose another --out or pass --overwrite to replace it")
        if not same_run(old, True) and not resume:
            raise InputError(f"{out_dir}: holds this run with other --epochs; pass --resume to continue it "
                             "or --overwrite to start again")
    elif out_dir.is_dir() and any(out_dir.iterdir()):
        raise InputError(f"{out_dir}: not empty and not a model directory; choose another --out or pass --overwrite")


def claim(out_dir: Path, *, overwrite: bool) -> None:
    """Make ``out_dir`` (already passed by ``check_out_dir``) ready for a run; ``overwrite`` clears the old one."""
    out_dir = Path(out_dir)
    if overwrite:
        for name in RUN_FILES:
            (out_dir / name).unlink(missing_ok=True)
        shutil.rmtree(out_dir / artifacts.BACKUP_DIR, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)


def save_model(model, path: Path) -> None:
    """Write one ``.keras`` file atomically."""
    write_atomically(Path(path), model.save)


def save_model_dir(model_dir: Path, model, *, config: dict, words: list, answers: list) -> dict:
    """Write a whole model directory atomically, file by file: model.keras, the JSON files, history.json.

    Returns:
        The history over all epochs (history.csv as lists; {} when there is none).
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    save_model(model, model_dir / artifacts.MODEL_FILE)
    write_text_atomically(model_dir / artifacts.VOCABULARY_JSON, json.dumps(words, ensure_ascii=False))
    write_text_atomically(model_dir / artifacts.ANSWERS_JSON, json.dumps(answers, ensure_ascii=False, indent=0))
    history = read_history(model_dir)
    write_text_atomically(model_dir / artifacts.HISTORY_JSON, json.dumps(history, indent=1))
    write_config(model_dir, config)
    return history


def read_history(model_dir: Path) -> dict[str, list[float]]:
    """history.csv (every epoch, across resumptions) as {metric: [per-epoch values]}; {} if absent."""
    path = Path(model_dir) / artifacts.HISTORY_CSV
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return {key: [float(row[key]) for row in rows if row.get(key) not in (None, "")] for key in (rows[0] if rows else {})}
