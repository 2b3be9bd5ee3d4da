"""vqa.modeldir: the model directory's schema, checks, loading, old formats, and best.keras across --resume."""

import json

import keras
import numpy as np
import pytest
from helpers import FAST, write_tiny_dataset

from vqa import artifacts, modeldir
from vqa.errors import InputError
from vqa.train import TrainConfig, train_model


def write_json_dir(folder, config, *, files=(artifacts.MODEL_FILE,)):
    """A model directory holding ``config`` as config.json and empty stand-ins for the other files."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / artifacts.CONFIG_JSON).write_text(json.dumps(config))
    for name in (artifacts.VOCABULARY_JSON, artifacts.ANSWERS_JSON):
        (folder / name).write_text("[]")
    for name in files:
        (folder / name).write_bytes(b"")
    return folder


def current_config(**changes):
    record = modeldir.make_config(model="mlp", status="finished", train={"epochs": 1}, max_question_length=30,
                                  spacy_model="en_core_web_md", num_answers=3, vocabulary_size=9,
                                  image_layout="vector", image_size=224, image_feature_shape=[64],
                                  cnn_weights="random", keras_version="3")
    return {**record, **changes}


def format_1(record):
    """``record`` as config.json was written before the format field: flags repeated, a dimension not a shape."""
    old = {k: v for k, v in record.items() if k not in ("format", "image_feature_shape")}
    return {**old, "norm_image": True, "standardize_image": True, "norm_question": False,
            "image_feature_dim": record["image_feature_shape"][-1]}


def test_each_value_is_written_once():
    record = current_config()
    assert record["format"] == modeldir.FORMAT
    assert not {"norm_image", "norm_question", "standardize_image", "image_feature_dim"} & set(record)


def test_a_format_1_config_reads_as_the_current_format(tmp_path):
    folder = write_json_dir(tmp_path / "m", format_1(current_config(train={"epochs": 1, "norm_image": False})))
    config = modeldir.read_config(folder)
    assert config["format"] == modeldir.FORMAT and config["image_feature_shape"] == [64]
    assert config["train"]["norm_image"] is False  # the run's own value wins over the repeat
    assert config["train"]["norm_question"] is False and "norm_question" not in config
    assert modeldir.check_model_dir(folder) == folder / artifacts.MODEL_FILE


@pytest.mark.parametrize("change,message", [
    (dict(format=modeldir.FORMAT + 1), "field 'format' is 3, newer than this vqa-keras reads"),
    (dict(model=None), "field 'model' is missing and has no default"),
    (dict(image_feature_shape=None), "field 'image_feature_shape' is missing"),
])
def test_a_newer_or_incomplete_config_is_one_line_naming_the_field_and_file(tmp_path, change, message):
    record = {k: v for k, v in current_config(**change).items() if v is not None}
    folder = write_json_dir(tmp_path / "m", record)
    with pytest.raises(InputError, match=message) as error:
        modeldir.check_model_dir(folder)
    assert str(folder / artifacts.CONFIG_JSON) in str(error.value) and "\n" not in str(error.value)


def test_missing_and_unknown_checkpoints_get_one_error_each(tmp_path):
    folder = write_json_dir(tmp_path / "m", current_config())
    with pytest.raises(InputError, match="no best.keras"):
        modeldir.check_model_dir(folder, checkpoint="best")
    with pytest.raises(InputError, match="checkpoint must be one of last, best, got 'first'"):
        modeldir.check_model_dir(folder, checkpoint="first")
    (folder / artifacts.MODEL_FILE).unlink()
    with pytest.raises(InputError, match=r"missing model\.keras"):
        modeldir.check_model_dir(folder)


class WeightsPerEpoch(keras.callbacks.Callback):
    """The model's weights after each epoch, by epoch number."""

    def __init__(self):
        super().__init__()
        self.weights = {}

    def on_epoch_end(self, epoch, logs=None):
        self.weights[epoch] = [np.array(w) for w in self.model.get_weights()]


class Overconfident(keras.callbacks.Callback):
    """Adds large noise to the answer layer just before each validation: that epoch's val loss is surely worse."""

    def on_test_begin(self, logs=None):
        kernel = self.model.get_layer("answer").kernel
        noise = np.random.default_rng(0).normal(scale=10.0, size=kernel.shape).astype(np.float32)
        kernel.assign(kernel + noise)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("modeldir"), num_images=60)


@pytest.mark.slow
def test_best_keras_holds_the_lowest_val_loss_epoch_of_the_whole_run_across_resume(dataset, tmp_path):
    data_dir, features = dataset
    run = dict(data_dir=data_dir, features_path=features, out_dir=tmp_path / "m", logdir=tmp_path / "logs")
    seen = WeightsPerEpoch()
    train_model(TrainConfig.for_model("mlp", epochs=2, hidden_units=16, **FAST), **run, extra_callbacks=(seen,))
    # The resumed epochs are made worse than the first two, so best.keras must stay at one of those.
    train_model(TrainConfig.for_model("mlp", epochs=4, hidden_units=16, **FAST), **run, resume=True,
                extra_callbacks=(Overconfident(), seen))
    val_loss = modeldir.read_history(tmp_path / "m")["val_loss"]
    best_epoch = int(np.argmin(val_loss))
    assert len(val_loss) == 4 and best_epoch < 2, f"the test needs the best epoch before the resume: {val_loss}"
    best = modeldir.load_keras_model(tmp_path / "m" / artifacts.BEST_MODEL_FILE).get_weights()
    for saved, expected in zip(best, seen.weights[best_epoch]):
        np.testing.assert_array_equal(saved, expected)


@pytest.mark.slow
def test_a_model_directory_in_the_old_format_loads_and_resumes(dataset, tmp_path):
    data_dir, features = dataset
    run = dict(data_dir=data_dir, features_path=features, out_dir=tmp_path / "m", logdir=tmp_path / "logs")
    train_model(TrainConfig.for_model("mlp", epochs=1, hidden_units=16, **FAST), **run)
    path = tmp_path / "m" / artifacts.CONFIG_JSON
    path.write_text(json.dumps(format_1(json.loads(path.read_text()))))
    loaded = modeldir.load_model_dir(tmp_path / "m")
    assert loaded.config["image_feature_shape"] == [64] and loaded.model.name == "mlp"
    history = train_model(TrainConfig.for_model("mlp", epochs=2, hidden_units=16, **FAST), **run, resume=True)
    assert history["epoch"] == [0.0, 1.0]
    assert json.loads(path.read_text())["format"] == modeldir.FORMAT
