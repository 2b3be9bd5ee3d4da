"""vqa.config: one home for every training default, the CLI built from it, the builders held to it."""

import inspect
import json
import re

import keras
import numpy as np
import pytest
from helpers import write_grid, write_tiny_dataset

from vqa import artifacts, models
from vqa.cli import build_parser, main
from vqa.config import MODEL_KINDS, TUTORIAL_INPUTS, TrainConfig, flag_fields, value_text
from vqa.feature_file import FeaturesFile

STATED_DEFAULT = re.compile(r"\(default: ([^;)]+)")


def train_subparser(model):
    """The argparse parser of `vqa train <model>`."""
    train = next(a for a in build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "train")[1]
    return train._subparsers._group_actions[0].choices[model]


def stated_defaults(model) -> dict:
    """{TrainConfig field: the default its flag's help states} for `vqa train <model>`."""
    stated = {}
    for action in train_subparser(model)._actions:
        match = STATED_DEFAULT.search(action.help or "")
        if match and action.dest in {f.name for f in flag_fields(model)}:
            stated[action.dest] = " ".join(match.group(1).split())
    return stated


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A tiny prepared dataset with fc7-like vectors and, for the attention models, a grid file of the same images."""
    root = tmp_path_factory.mktemp("config")
    data_dir, features = write_tiny_dataset(root, num_images=12)
    image_ids = FeaturesFile.open(features).image_ids
    grid = np.random.default_rng(0).random((len(image_ids), 2, 2, 512)).astype(np.float16)
    write_grid(root / "grid.h5", grid, image_ids)
    return data_dir, {"mlp": features, "lstm": features, "san": root / "grid.h5", "topdown": root / "grid.h5"}


@pytest.mark.parametrize("model", MODEL_KINDS)
def test_every_flag_states_the_default_a_run_with_no_flags_records(model, inputs, tmp_path, monkeypatch):
    data_dir, features = inputs
    monkeypatch.setattr(keras.Model, "fit", lambda self, *args, **kwargs: None)  # the run without its epochs
    out = tmp_path / "m"
    assert main(["train", model, "--data", str(data_dir), "--features", str(features[model]), "--out", str(out),
                 "--logdir", str(tmp_path / "logs")]) == 0
    recorded = json.loads((out / artifacts.CONFIG_JSON).read_text())["train"]
    stated = stated_defaults(model)
    assert set(stated) == {f.name for f in flag_fields(model)}  # every flag states its default
    assert {name: value_text(recorded[name]) for name in stated} == stated


def test_help_names_the_tutorials_value_where_the_default_departs():
    help_text = " ".join(train_subparser("mlp").format_help().split())
    assert "(default: 0.3; the tutorial's: 0.5)" in help_text  # --dropout, the drift that motivated this
    assert "(default: adam; the tutorial's: rmsprop)" in help_text
    assert "(default: soft; the tutorial's: modal)" in help_text  # --loss: per model, the MLP's is soft
    assert stated_defaults("lstm")["loss"] == "modal"
    assert "--attention-units" not in help_text and "--attention-units" in train_subparser("san").format_help()


# The builders' keyword defaults: the tutorial's topology and recipe, except the input-scaling switches,
# which are this project's per-model defaults (a library caller gets a model that uses the image).
BUILDER_FIELDS = {"kernel_initializer": "initializer", "question_units": "lstm_units",
                  "question_layers": "lstm_layers"}


@pytest.mark.parametrize("builder,model", [(models.build_mlp, "mlp"), (models.build_lstm, "lstm"),
                                           (models.build_san, "san"), (models.compile_model, "mlp")])
def test_builder_defaults_are_held_to_the_config(builder, model):
    tutorial, project = TrainConfig.for_model(model, tutorial_recipe=True), TrainConfig.for_model(model)
    checked = 0
    for name, parameter in inspect.signature(builder).parameters.items():
        field = BUILDER_FIELDS.get(name, name)
        if parameter.default is inspect.Parameter.empty or not hasattr(tutorial, field):
            continue
        expected = getattr(project if field in TUTORIAL_INPUTS else tutorial, field)
        assert parameter.default == expected, f"{builder.__name__}({name}=...)"
        checked += 1
    assert checked >= 3


def test_presets_are_named_for_what_they_hold():
    mlp = TrainConfig.for_model("mlp")
    assert (mlp.optimizer, mlp.lr_schedule, mlp.dropout) == ("adam", "plateau", 0.3)  # this project's
    recipe = TrainConfig.for_model("mlp", tutorial_recipe=True)
    assert (recipe.optimizer, recipe.lr_schedule, recipe.dropout, recipe.norm_question) == ("rmsprop", "none", 0.5,
                                                                                            False)
    assert (recipe.epochs, recipe.batch_size) == (100, 128)  # the tutorial's either way
