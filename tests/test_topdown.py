"""The top-down attention model (`vqa train topdown`): topology, masking, its maps, training, asking it."""

from __future__ import annotations

import inspect

import keras
import numpy as np
import pytest
from helpers import fit_on_binding_scenes, train_grid_model

from vqa.cli import main
from vqa.config import IMAGE_LAYOUTS, TrainConfig
from vqa.models import GatedTanh, TopDownGlimpse, answer_only, build_topdown, compile_model

V, K, WORD = 10, 5, 300


@pytest.fixture(scope="module")
def embeddings():
    matrix = np.random.default_rng(0).normal(size=(V, WORD)).astype(np.float32) * 5
    matrix[:2] = 0.0  # <pad>, <oov>
    return matrix


def grid_inputs(grid, n=3, channels=512, seed=1):
    rng = np.random.default_rng(seed)
    return {"question": np.array([[2, 3, 4, 0], [5, 0, 0, 0], [6, 7, 8, 9]][:n], dtype=np.int32),
            "image_features": rng.normal(size=(n, grid, grid, channels)).astype(np.float32)}


def dense(n_in, n_out):
    return n_in * n_out + n_out


def test_topdown_topology_and_parameter_counts(embeddings):
    """d = 512 (question, joint), k = 256 (regions), two glimpses, 14 x 14 x 512 regions, K = 1000."""
    d, k, S, C, answers = 512, 256, 14, 512, 1000
    model = build_topdown(embeddings=embeddings, num_answers=answers, grid_size=S, question_units=d,
                          attention_units=k)
    glimpse = dense(d, 2 * k) + dense(k, 1) + dense(d, 2 * d) + dense(k, 2 * d)  # g_Q, w; g_QJ, g_VJ
    assert model.get_layer("glimpse_1").count_params() == model.get_layer("glimpse_2").count_params() == glimpse
    assert model.get_layer("region_projection").count_params() == dense(C + 2, 2 * k)  # gated: values and gates
    expected = 4 * d * (WORD + d + 1) + dense(C + 2, 2 * k) + 2 * glimpse + dense(d, 2 * d) + dense(d, answers)
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == expected
    assert dict(model.output)["attention"].shape == (None, 2, S * S)
    assert dict(model.output)["answer"].shape == (None, answers)


def test_gated_tanh_is_tanh_times_a_sigmoid_gate():
    layer = GatedTanh(3)
    x = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
    y = np.asarray(layer(x))
    kernel, bias = (np.asarray(w) for w in layer.dense.weights)
    z = x @ kernel + bias
    assert np.allclose(y, np.tanh(z[:, :3]) / (1 + np.exp(-z[:, 3:])), atol=1e-6)


def test_each_glimpse_is_a_distribution_over_the_regions(embeddings):
    model = build_topdown(embeddings=embeddings, num_answers=K, grid_size=3, question_units=8, attention_units=4,
                          attention_layers=3)
    outputs = model(grid_inputs(3), training=False)
    attention = np.asarray(outputs["attention"])
    assert attention.shape == (3, 3, 9)
    assert np.all(attention >= 0) and np.allclose(attention.sum(axis=-1), 1.0, atol=1e-5)
    assert np.allclose(np.asarray(outputs["answer"]).sum(axis=-1), 1.0, atol=1e-5)
    assert not np.allclose(attention[:, 0], attention[:, 1])  # each glimpse asks with its own query


def test_the_soft_loss_gives_independent_sigmoid_scores_and_the_same_maps(embeddings):
    kwargs = dict(embeddings=embeddings, num_answers=K, grid_size=3, question_units=8, attention_units=4)
    keras.utils.set_random_seed(0)
    softmax = build_topdown(**kwargs)
    keras.utils.set_random_seed(0)
    sigmoid = build_topdown(**kwargs, output_activation="sigmoid")
    inputs = grid_inputs(3)
    a, b = softmax(inputs, training=False), sigmoid(inputs, training=False)
    scores = np.asarray(b["answer"])
    assert np.all((scores > 0) & (scores < 1)) and not np.allclose(scores.sum(axis=-1), 1.0, atol=1e-3)
    np.testing.assert_allclose(np.asarray(a["attention"]), np.asarray(b["attention"]), atol=1e-6)


def test_padded_question_tokens_are_ignored(embeddings):
    model = build_topdown(embeddings=embeddings, num_answers=K, grid_size=2, question_units=8, attention_units=4)
    inputs = grid_inputs(2)
    padded = {**inputs, "question": np.pad(inputs["question"], ((0, 0), (0, 5)))}
    shuffled = {**inputs, "question": inputs["question"].copy()}
    shuffled["question"][0] = [4, 3, 2, 0]  # the words matter: another order, another answer
    for name in ("answer", "attention"):
        base = np.asarray(model(inputs, training=False)[name])
        assert np.allclose(base, np.asarray(model(padded, training=False)[name]), atol=1e-6)
    assert not np.allclose(np.asarray(model(inputs)["answer"])[0], np.asarray(model(shuffled)["answer"])[0])


def test_training_view_shares_weights_and_the_model_reloads_in_safe_mode(tmp_path, embeddings):
    model = build_topdown(embeddings=embeddings, num_answers=K, grid_size=2, question_units=8, attention_units=4)
    trainer = compile_model(answer_only(model), optimizer="adam")
    assert list(trainer.output) == ["answer"]
    inputs = grid_inputs(2)
    before = np.asarray(model(inputs, training=False)["answer"])
    trainer.fit(inputs, {"answer": np.array([0, 1, 2])}, epochs=2, verbose=0)
    after = model(inputs, training=False)
    assert not np.allclose(before, np.asarray(after["answer"]))
    model.save(tmp_path / "topdown.keras")
    reloaded = keras.saving.load_model(tmp_path / "topdown.keras", safe_mode=True)
    assert isinstance(reloaded.get_layer("glimpse_1"), TopDownGlimpse)
    again = reloaded(inputs, training=False)
    for name in ("answer", "attention"):
        assert np.allclose(np.asarray(after[name]), np.asarray(again[name]), atol=1e-6)


def test_the_builders_defaults_are_the_models_defaults_in_the_config():
    """No tutorial to hold it to: build_topdown's keyword defaults are `vqa train topdown`'s."""
    config, names = TrainConfig.for_model("topdown"), {"question_units": "lstm_units", "question_layers": "lstm_layers"}
    assert IMAGE_LAYOUTS["topdown"] == "grid"
    checked = 0
    for name, parameter in inspect.signature(build_topdown).parameters.items():
        if parameter.default is not inspect.Parameter.empty and hasattr(config, names.get(name, name)):
            assert parameter.default == getattr(config, names.get(name, name)), name
            checked += 1
    assert checked == 7


@pytest.mark.slow
def test_a_trained_topdown_model_attends_to_the_object_the_question_names():
    outputs, val_labels, val_targets = fit_on_binding_scenes(build_topdown)
    assert np.mean(np.asarray(outputs["answer"]).argmax(-1) == val_labels) > 0.95
    attention = np.asarray(outputs["attention"])  # (N, 2, 9)
    assert np.mean(attention[:, 0].argmax(-1) == val_targets) > 0.9  # the first glimpse finds the named shape


# --------------------------------------------------------------------------- vqa train / ask with the model
@pytest.fixture(scope="module")
def topdown_model_dir(synth_data, tmp_path_factory):
    return train_grid_model("topdown", synth_data, tmp_path_factory.mktemp("topdown"))


@pytest.mark.slow
def test_vqa_ask_attention_draws_the_topdown_models_glimpses(topdown_model_dir, synth_data, tmp_path, capsys):
    from PIL import Image

    from vqa.attention_figure import figure_size
    from vqa.predict import Predictor

    predictor = Predictor(topdown_model_dir, cnn_weights="random")
    info = predictor.info()
    assert info["model"] == "topdown" and info["attention"] is True and info["image_layout"] == "grid"
    question = "What color is the circle?"
    answers, attention = predictor.ask_with_attention(synth_data.image, question, top=2)
    grid = predictor.answerer.grid_size
    assert attention.shape == (2, grid, grid) and np.allclose(attention.sum(axis=(1, 2)), 1, atol=1e-5)
    out = tmp_path / "attention.png"
    assert main(["ask", "--model", str(topdown_model_dir), "--image", str(synth_data.image), "--question", question,
                 "--top", "2", "--cnn-weights", "random", "--attention", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(maxsplit=1)[1] for line in lines[:2]] == [answer for answer, _ in answers]
    with Image.open(out) as figure:
        assert figure.size == figure_size(2)
