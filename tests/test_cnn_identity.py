"""The CNN weights' identity: written into the features file, kept in config.json, and the one pairing rule
(`vqa.feature_file.check_cnn_pairing`) that `vqa ask`, `vqa serve` and `vqa evaluate --model` apply.

Weights files are tiny Keras .h5 files: recording and checking an identity hashes the file and never
builds VGG16, and a refusal comes before any model loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
from helpers import FAST, jpeg_file, set_attribute, write_tiny_dataset

from vqa import artifacts, features, modeldir
from vqa.cli import main
from vqa.errors import InputError
from vqa.feature_file import CNNIdentity, FeaturesFile, check_cnn_pairing

SHA_A, SHA_B = "a" * 64, "b" * 64
KARPATHY = CNNIdentity(artifacts.CNN_KARPATHY)
KERAS = CNNIdentity(artifacts.CNN_KERAS_IMAGENET, SHA_A)
KERAS_UNHASHED = CNNIdentity(artifacts.CNN_KERAS_IMAGENET)
LOCAL_A, LOCAL_B = CNNIdentity(artifacts.CNN_LOCAL, SHA_A), CNNIdentity(artifacts.CNN_LOCAL, SHA_B)
RANDOM, UNKNOWN = CNNIdentity(artifacts.CNN_RANDOM), CNNIdentity()


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> tuple[Path, Path]:
    """Two different tiny Keras .h5 weights files (what --cnn-weights checks and hashes)."""
    import keras

    folder = tmp_path_factory.mktemp("weights")
    paths = (folder / "vgg16_one.h5", folder / "vgg16_two.h5")
    for seed, path in enumerate(paths):
        keras.utils.set_random_seed(seed)
        keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)]).save(path)
    return paths


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fake_model_dir(root: Path, identity: CNNIdentity | None, *, cnn_weights: str | None = "random") -> Path:
    """A finished model directory whose model file is junk: every check here comes before Keras loads it."""
    root.mkdir(parents=True, exist_ok=True)
    config = modeldir.make_config(model="mlp", status="finished", train={"epochs": 1}, max_question_length=30,
                                  spacy_model=None, num_answers=2, vocabulary_size=4, image_layout="vector",
                                  image_size=224, image_feature_shape=[8], cnn_weights=cnn_weights,
                                  cnn_identity=None if identity is None else identity.record(), keras_version="3")
    modeldir.write_config(root, config)
    (root / artifacts.VOCABULARY_JSON).write_text(json.dumps(["<pad>", "<oov>", "what", "color"]))
    (root / artifacts.ANSWERS_JSON).write_text(json.dumps(["blue", "red"]))
    (root / artifacts.MODEL_FILE).write_bytes(b"not a keras file")
    return root


# --------------------------------------------------------------------------- the features file
@pytest.mark.parametrize("identity", [KARPATHY, KERAS, KERAS_UNHASHED, LOCAL_A, RANDOM, UNKNOWN],
                         ids=["karpathy", "keras", "keras-unhashed", "local", "random", "unknown"])
def test_the_identity_round_trips_through_the_features_file(tmp_path, identity):
    path = tmp_path / "f.h5"
    FeaturesFile.write(path, np.ones((2, 8), np.float32), [1, 2], cnn_identity=identity)
    assert FeaturesFile.open(path).cnn_identity == identity


def test_a_file_from_before_the_identity_reads_as_unknown(tmp_path):
    path = tmp_path / "old.h5"
    FeaturesFile.write(path, np.ones((2, 8), np.float32), [1, 2], cnn_identity=LOCAL_A)
    with h5py.File(path, "a") as h5:  # as vqa wrote format 1 before the identity: no cnn_kind, no cnn_sha256
        set_attribute("cnn_kind")(h5)
        set_attribute("cnn_sha256")(h5)
    opened = FeaturesFile.open(path)
    assert (opened.cnn_identity, opened.format_version, opened.cnn_weights) == (UNKNOWN, 1, "random")


@pytest.mark.parametrize("name, value", [("cnn_kind", "resnet50"), ("cnn_sha256", "not-a-digest")])
def test_a_damaged_identity_is_one_line_naming_the_file(tmp_path, name, value):
    path = tmp_path / "f.h5"
    FeaturesFile.write(path, np.ones((2, 8), np.float32), [1, 2], cnn_identity=LOCAL_A)
    with h5py.File(path, "a") as h5:
        set_attribute(name, value)(h5)
    with pytest.raises(InputError, match="CNN identity") as raised:
        FeaturesFile.open(path)
    assert str(raised.value).startswith(f"{path}: ") and "\n" not in str(raised.value)


# --------------------------------------------------------------------------- the identity of --cnn-weights
def test_the_identity_of_each_cnn_weights_value(weights, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    assert features.cnn_identity("random") == RANDOM
    assert features.cnn_identity("imagenet") == KERAS_UNHASHED  # not in Keras' cache: the kind alone
    cached = tmp_path / "keras" / "models" / features.IMAGENET_WEIGHTS_FILE
    cached.parent.mkdir(parents=True)
    shutil.copy(weights[0], cached)
    assert features.cnn_identity("imagenet") == CNNIdentity(artifacts.CNN_KERAS_IMAGENET, sha256(weights[0]))
    assert features.cnn_identity(str(weights[1])) == CNNIdentity(artifacts.CNN_LOCAL, sha256(weights[1]))


def test_a_local_copy_of_keras_imagenet_file_is_that_kind(weights, tmp_path, monkeypatch):
    copy = tmp_path / "copy.h5"
    shutil.copy(weights[0], copy)
    monkeypatch.setattr(features, "IMAGENET_WEIGHTS_SIZE", copy.stat().st_size)
    monkeypatch.setattr(features, "IMAGENET_WEIGHTS_MD5", hashlib.md5(copy.read_bytes()).hexdigest())
    assert features.cnn_identity(str(copy)) == CNNIdentity(artifacts.CNN_KERAS_IMAGENET, sha256(copy))
    other = tmp_path / "other.h5"
    shutil.copy(weights[1], other)  # another file of that size would still be "local": the MD5 decides
    assert features.cnn_identity(str(other)).kind == artifacts.CNN_LOCAL


def test_a_weights_file_is_read_once_per_process_until_it_changes(weights, tmp_path):
    path = tmp_path / "w.h5"
    shutil.copy(weights[0], path)
    first = features.cnn_identity(str(path))
    misses = features._hash_file_once.cache_info().misses
    assert features.cnn_identity(str(path)) == first
    assert features._hash_file_once.cache_info().misses == misses
    shutil.copy(weights[1], path)
    os.utime(path, ns=(1, 1))
    assert features.cnn_identity(str(path)) == CNNIdentity(artifacts.CNN_LOCAL, sha256(weights[1]))


def test_vqa_features_records_the_local_file_it_used(weights, tmp_path):
    class ZeroCNN:  # stands in for VGG16: the identity comes from the weights file, not the model
        def predict_on_batch(self, batch):
            return np.zeros((len(batch), artifacts.IMAGE_FEATURE_DIM), np.float32)

    images = tmp_path / "images"
    for image_id in (3, 7):
        jpeg_file(images / f"COCO_val2014_{image_id:012d}.jpg")
    out = tmp_path / "features.h5"
    assert features.extract_image_features(images, out, cnn_weights=str(weights[0]), cnn=ZeroCNN()) == 2
    opened = FeaturesFile.open(out)
    assert opened.cnn_identity == CNNIdentity(artifacts.CNN_LOCAL, sha256(weights[0]))
    assert opened.cnn_weights == str(weights[0].resolve())


# --------------------------------------------------------------------------- the pairing rule
@pytest.mark.parametrize("trained, asked, allowed", [
    (RANDOM, RANDOM, True),
    (RANDOM, KERAS, False),  # random-weight features, asked with real weights
    (RANDOM, LOCAL_A, False),
    (RANDOM, KARPATHY, False),
    (KERAS, RANDOM, True),  # --cnn-weights random goes with any model (it warns)
    (LOCAL_A, RANDOM, True),
    (KARPATHY, RANDOM, True),
    (KERAS, KERAS_UNHASHED, True),
    (KERAS, LOCAL_A, False),  # a local file that is not a copy of Keras' ImageNet file
    (LOCAL_A, KERAS_UNHASHED, False),
    (LOCAL_A, LOCAL_A, True),
    (LOCAL_A, LOCAL_B, False),  # two local files that differ
    (KARPATHY, KERAS, True),  # the tutorial's pairing
    (KARPATHY, LOCAL_A, True),  # a local file may be Caffe's weights converted
    (KERAS, KARPATHY, True),
    (UNKNOWN, KERAS, True),  # older model directories
    (UNKNOWN, LOCAL_B, True),
    (LOCAL_A, UNKNOWN, True),  # older features files
    (RANDOM, UNKNOWN, True),
])
def test_the_pairing_rule(trained, asked, allowed):
    if allowed:
        check_cnn_pairing(trained, asked, model="m", asked_by="--cnn-weights x")
    else:
        with pytest.raises(InputError):
            check_cnn_pairing(trained, asked, model="m", asked_by="--cnn-weights x")


def test_a_refusal_is_one_line_naming_both():
    with pytest.raises(InputError) as raised:
        check_cnn_pairing(LOCAL_A, LOCAL_B, model="models/mlp", asked_by="--cnn-weights other.h5")
    message = str(raised.value)
    assert message.startswith("models/mlp: trained on features of a local VGG16 weights file (SHA-256 aaaaaaaaaaaa")
    assert "--cnn-weights other.h5 gives features of a local VGG16 weights file (SHA-256 bbbbbbbbbbbb" in message
    assert "\n" not in message


def test_check_cnn_weights_hashes_the_asked_file_and_pairs_it(weights):
    trained = CNNIdentity(artifacts.CNN_LOCAL, sha256(weights[0]))
    features.check_cnn_weights(trained, str(weights[0]), model="m")
    features.check_cnn_weights(trained, "random", model="m")
    with pytest.raises(InputError, match="--cnn-weights imagenet gives features of Keras' ImageNet VGG16"):
        features.check_cnn_weights(trained, "imagenet", model="m")
    with pytest.raises(InputError, match=f"SHA-256 {sha256(weights[1])[:12]}"):
        features.check_cnn_weights(trained, str(weights[1]), model="m")


# --------------------------------------------------------------------------- the model directory
def test_a_model_directory_from_before_the_identity_reads_as_unknown(tmp_path):
    model_dir = fake_model_dir(tmp_path / "m", LOCAL_A)
    assert modeldir.read_cnn_identity(model_dir) == LOCAL_A
    config = json.loads((model_dir / artifacts.CONFIG_JSON).read_text())
    del config["cnn_identity"]
    modeldir.write_config(model_dir, config)
    assert modeldir.read_cnn_identity(model_dir) == UNKNOWN


@pytest.mark.slow  # trains a tiny MLP for one epoch
def test_training_keeps_the_features_identity(tmp_path):
    from vqa.train import TrainConfig, train_model

    data_dir, features_path = write_tiny_dataset(tmp_path, num_images=20, dim=16)
    rows, ids = FeaturesFile.open(features_path).load()
    FeaturesFile.write(features_path, rows, ids, cnn_weights="/w/vgg16.h5", cnn_identity=LOCAL_A)
    config = TrainConfig.for_model("mlp", epochs=1, hidden_units=4, hidden_layers=1, **FAST)
    train_model(config, data_dir=data_dir, features_path=features_path, out_dir=tmp_path / "m", logdir=tmp_path / "g")
    assert modeldir.read_cnn_identity(tmp_path / "m") == LOCAL_A
    assert modeldir.read_config(tmp_path / "m")["cnn_identity"] == {"kind": "local", "sha256": SHA_A}


# --------------------------------------------------------------------------- ask, serve, evaluate
def test_vqa_ask_refuses_another_local_file_in_one_line(weights, tmp_path, capsys):
    model_dir = fake_model_dir(tmp_path / "m", CNNIdentity(artifacts.CNN_LOCAL, sha256(weights[0])),
                               cnn_weights=str(weights[0]))
    image = jpeg_file(tmp_path / "image.jpg")
    code = main(["ask", "--model", str(model_dir), "--image", str(image), "--question", "what color?",
                 "--cnn-weights", str(weights[1])])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert sha256(weights[0])[:12] in err[0] and sha256(weights[1])[:12] in err[0]
    assert f"--cnn-weights {weights[1]}" in err[0]


def test_vqa_serve_settings_refuse_imagenet_for_a_random_weights_model(weights, tmp_path):
    from vqa.serve_config import ServeSettings

    model_dir = fake_model_dir(tmp_path / "m", RANDOM)
    with pytest.raises(InputError, match="trained on features of random VGG16 weights, but --cnn-weights imagenet"):
        ServeSettings(model_dir=model_dir).with_files_checked()
    assert ServeSettings(model_dir=model_dir, cnn_weights="random").with_files_checked().cnn_weights == "random"
    local = ServeSettings(model_dir=model_dir, cnn_weights=str(weights[0]))
    with pytest.raises(InputError, match="a local VGG16 weights file"):
        local.with_files_checked()
    unknown = fake_model_dir(tmp_path / "old", None)  # an older directory: nothing to check against
    assert ServeSettings(model_dir=unknown).with_files_checked().model_dir == unknown.resolve()


class FakePredictor:
    """Stands in for vqa.predict.Predictor in `vqa evaluate --model`: a config, the data's words, "yes" always."""

    trained = RANDOM
    words: list = []

    def __init__(self, model_dir, **kwargs):
        self.config = {"model": "mlp", "cnn_identity": self.trained.record()}
        self.images, self.questions, self.answerer = SimpleNamespace(layout="vector"), self, self

    def outputs(self, token_ids, image_features, *, batch_size=512):
        return {"answer": np.zeros((len(token_ids), 1), np.float32)}

    def best_answers(self, probabilities):
        return ["yes"] * len(probabilities)


@pytest.mark.parametrize("trained, in_file, code", [(RANDOM, KERAS, 1), (KERAS, KARPATHY, 0), (LOCAL_A, LOCAL_A, 0),
                                                    (LOCAL_A, LOCAL_B, 1)],
                         ids=["random-vs-keras", "tutorial-pairing", "same-file", "other-file"])
def test_vqa_evaluate_model_compares_the_features_file(tmp_path, monkeypatch, capsys, trained, in_file, code):
    from vqa import predict
    from vqa.prepared import load_prepared

    data_dir, features_path = write_tiny_dataset(tmp_path, num_images=4, dim=8)
    rows, ids = FeaturesFile.open(features_path).load()
    FeaturesFile.write(features_path, rows, ids, cnn_identity=in_file)
    monkeypatch.setattr(predict, "Predictor", FakePredictor)
    monkeypatch.setattr(FakePredictor, "trained", trained)
    monkeypatch.setattr(FakePredictor, "words", load_prepared(data_dir).words)
    out = tmp_path / "results.json"
    assert main(["evaluate", "--model", str(tmp_path), "--data", str(data_dir), "--features", str(features_path),
                 "--results", str(out)]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert out.exists() == (code == 0)
    if code:
        assert len(err) == 1 and f"features file {features_path} gives features of {in_file}" in err[0]


@pytest.mark.slow  # the session's dataset and model: random-weight VGG16 features, then training
def test_the_pipeline_carries_random_weights_from_features_to_ask(synth_data, mlp_model_dir, capsys):
    assert FeaturesFile.open(synth_data.features).cnn_identity == RANDOM
    assert modeldir.read_cnn_identity(mlp_model_dir) == RANDOM
    code = main(["ask", "--model", str(mlp_model_dir), "--image", str(synth_data.image), "--question", "what color?",
                 "--cnn-weights", "imagenet"])  # refused before VGG16 loads: nothing is downloaded
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "trained on features of random VGG16 weights" in err[0]
    out = synth_data.image.parent / "export-refused"
    code = main(["export", "--model", str(mlp_model_dir), "--out", str(out), "--with-cnn", "--cnn-weights", "imagenet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "trained on features of random VGG16 weights" in err[0]
    assert not out.exists()
