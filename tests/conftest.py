"""Session fixtures: one tiny `vqa synth` dataset, prepared, featurised and trained on.

Built once per test session through the library calls behind `vqa synth`,
`vqa prepare`, `vqa features --cnn-weights random` (`vqa.sample_dataset`) and `vqa train`; `app` and
`client` are the Flask tutorial's fixtures for serving/app.py. A tiny stacked
attention network (`san_model_dir`) trains on grid features of the same images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

SYNTH_IMAGES = 32


def pytest_configure(config):
    """Random VGG16 weights are what the tests mean to use: silence their warning (vqa.features' switch)."""
    config.addinivalue_line("filterwarnings", "ignore::vqa.features.RandomWeightsWarning")


@dataclass(frozen=True)
class SynthData:
    """Paths of the session's synthetic dataset."""

    root: Path  # `vqa synth` output (official JSON + images/)
    prepared: Path  # `vqa prepare` output
    features: Path  # `vqa features --cnn-weights random` output
    image: Path  # one val image


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> SynthData:
    from vqa.sample_dataset import build_sample_dataset

    dataset = build_sample_dataset(tmp_path_factory.mktemp("synth"), num_images=SYNTH_IMAGES, seed=0,
                                   num_answers=100, batch_size=16)
    image = sorted((dataset.raw / "images" / "val2014").glob("*.jpg"))[0]
    return SynthData(dataset.raw, dataset.prepared, dataset.features_for("mlp"), image)


@pytest.fixture(scope="session")
def mlp_model_dir(synth_data, tmp_path_factory) -> Path:
    """A tiny MLP model directory (16 hidden units, 2 epochs on the synthetic data; both checkpoints).

    For the tests of what a model directory holds and how it is served: none needs the tutorial's
    1024 units (a 180 MB directory to train, load and copy, against 4 MB here) or an accurate model.
    It trains with the modal loss: the predict and export tests compare the served probabilities with
    the Keras model's own outputs, which only a softmax's are (soft models: test_soft_loss.py).
    """
    from vqa.train import TrainConfig, train_model

    base = tmp_path_factory.mktemp("models")
    config = TrainConfig.for_model("mlp", epochs=2, batch_size=32, seed=0, verbose=0, hidden_units=16,
                                  hidden_layers=1, loss="modal")
    train_model(config, data_dir=synth_data.prepared, features_path=synth_data.features,
                out_dir=base / "mlp", logdir=base / "Graph")
    return base / "mlp"


@pytest.fixture(scope="session")
def san_model_dir(synth_data, tmp_path_factory) -> Path:
    """A tiny stacked attention network, one epoch on random-weight grid features at 64 pixels."""
    from helpers import train_grid_model

    return train_grid_model("san", synth_data, tmp_path_factory.mktemp("san"))


@pytest.fixture(scope="session")
def san_predictor(san_model_dir):
    """A Predictor over `san_model_dir` with the random-weight grid VGG16 its features came from."""
    from vqa.predict import Predictor

    return Predictor(san_model_dir, cnn_weights="random")


@pytest.fixture(scope="session")
def predictor(mlp_model_dir):
    """A Predictor over `mlp_model_dir` with the random-weight VGG16 its features came from."""
    from vqa.predict import Predictor

    return Predictor(mlp_model_dir, cnn_weights="random")


@pytest.fixture(scope="session")
def app(predictor):
    """The Flask app as in the Flask tutorial's conftest, over the session's Predictor.

    Session-scoped, unlike flaskr's: every app shares one Predictor, and create_app's
    warm-up prediction would otherwise run once per test.
    """
    from serving.app import create_app

    return create_app({"TESTING": True, "VQA_PREDICTOR": predictor, "VQA_MAX_UPLOAD_MB": 1})


@pytest.fixture()
def client(app):
    """A test client for ``app`` (no server, no network)."""
    return app.test_client()


@pytest.fixture(scope="session")
def san_app(san_predictor):
    """The Flask app over the session's stacked attention network."""
    from serving.app import create_app

    return create_app({"TESTING": True, "VQA_PREDICTOR": san_predictor, "VQA_MAX_UPLOAD_MB": 1})


@pytest.fixture()
def san_client(san_app):
    """A test client for ``san_app``."""
    return san_app.test_client()
