"""vqa.models: the tutorial's topologies, parameter counts, masking and safe-mode reloading."""

import keras
import numpy as np
import pytest
from helpers import fit_on_binding_scenes

from vqa.models import GridCoordinates, MaskedSum, answer_only, build_lstm, build_mlp, build_san, compile_model

V, K, WORD, IMAGE = 10, 5, 300, 4096  # tiny vocabulary and answer set, real vector sizes


@pytest.fixture(scope="module")
def embeddings():
    matrix = np.random.default_rng(0).normal(size=(V, WORD)).astype(np.float32) * 5
    matrix[:2] = 0.0  # <pad>, <oov>
    return matrix


def dense(n_in, n_out):
    return n_in * n_out + n_out


def lstm(n_in, units):
    return 4 * units * (n_in + units + 1)


def layer_summary(model):
    return [(layer.name, type(layer).__name__) for layer in model.layers
            if type(layer).__name__ not in ("InputLayer", "NotEqual")]


def test_mlp_topology_and_parameter_counts(embeddings):
    model = build_mlp(embeddings=embeddings, num_answers=K)
    assert layer_summary(model) == [
        ("word_vectors", "Embedding"), ("bag_of_words", "MaskedSum"), ("question_norm", "UnitNormalization"),
        ("image_norm", "UnitNormalization"), ("merge", "Concatenate"),
        ("hidden_0", "Dense"), ("dropout_0", "Dropout"),
        ("hidden_1", "Dense"), ("dropout_1", "Dropout"), ("hidden_2", "Dense"), ("dropout_2", "Dropout"),
        ("hidden_3", "Dense"), ("dropout_3", "Dropout"), ("answer", "Dense")]
    assert model.get_layer("hidden_0").get_config()["activation"] == "linear"  # as the tutorial's code
    assert {model.get_layer(f"hidden_{i}").get_config()["activation"] for i in (1, 2, 3)} == {"tanh"}
    assert model.get_layer("dropout_2").rate == 0.5
    trainable = dense(WORD + IMAGE, 1024) + 3 * dense(1024, 1024) + dense(1024, K)
    assert model.count_params() == trainable + V * WORD
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == trainable
    shapes = {t.name: tuple(t.shape) for t in model.inputs}
    assert shapes == {"question": (None, None), "image_features": (None, IMAGE)}
    assert model.output_names == ["answer"]


@pytest.mark.parametrize("hidden_layers", [3, 0])
def test_lstm_topology_and_parameter_counts(embeddings, hidden_layers):
    model = build_lstm(embeddings=embeddings, num_answers=K, hidden_layers=hidden_layers)
    head = [(f"{kind}_{i}", cls) for i in range(1, hidden_layers + 1)
            for kind, cls in (("hidden", "Dense"), ("dropout", "Dropout"))]
    names = layer_summary(model)
    assert names[:4] == [("word_vectors", "Embedding"), ("lstm_1", "LSTM"), ("lstm_2", "LSTM"), ("lstm_3", "LSTM")]
    assert names[-(len(head) + 2):] == [("merge", "Concatenate")] + head + [("answer", "Dense")]
    after_merge = 512 + IMAGE
    head_params = (dense(after_merge, 1024) + 2 * dense(1024, 1024) + dense(1024, K)) if hidden_layers else dense(after_merge, K)
    trainable = lstm(WORD, 512) + 2 * lstm(512, 512) + head_params
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == trainable
    for i in (1, 2, 3):  # cuDNN-eligible and only the last returns its final output
        config = model.get_layer(f"lstm_{i}").get_config()
        assert (config["activation"], config["recurrent_activation"], config["recurrent_dropout"],
                config["unroll"], config["use_bias"]) == ("tanh", "sigmoid", 0.0, False, True)
        assert config["return_sequences"] == (i < 3)
    # The tutorial's LSTM code: 'uniform' tanh layers, Keras' default glorot_uniform output layer.
    assert model.get_layer("answer").get_config()["kernel_initializer"]["class_name"] == "GlorotUniform"
    if hidden_layers:
        assert model.get_layer("hidden_1").get_config()["kernel_initializer"]["class_name"] == "RandomUniform"


def test_initialisers_first_dropout_and_optimisers_are_parameters(embeddings):
    model = build_mlp(embeddings=embeddings, num_answers=K, first_initializer="glorot_uniform",
                      kernel_initializer="he_uniform", first_dropout=0.1)
    initializers = {name: model.get_layer(name).get_config()["kernel_initializer"]["class_name"]
                    for name in ("hidden_0", "hidden_1", "answer")}
    assert initializers == {"hidden_0": "GlorotUniform", "hidden_1": "HeUniform", "answer": "HeUniform"}
    assert (model.get_layer("dropout_0").rate, model.get_layer("dropout_1").rate) == (0.1, 0.5)
    tutorial = build_mlp(embeddings=embeddings, num_answers=K)
    assert {tutorial.get_layer(n).get_config()["kernel_initializer"]["class_name"]
            for n in ("hidden_0", "hidden_3", "answer")} == {"RandomUniform"}
    for name, cls in (("adam", keras.optimizers.Adam), ("rmsprop", keras.optimizers.RMSprop)):
        compiled = compile_model(build_mlp(embeddings=embeddings, num_answers=K), optimizer=name, learning_rate=0.01,
                                 epsilon=1e-4, clipnorm=1.0, jit_compile=False)
        assert isinstance(compiled.optimizer, cls)
        assert (compiled.optimizer.epsilon, compiled.optimizer.clipnorm) == (1e-4, 1.0)


def test_weight_decay_shrinks_weights_that_get_no_gradient():
    """Decoupled (AdamW-style): a weight with zero gradient still shrinks by learning_rate * weight_decay."""
    inputs = keras.Input((2,))
    model = keras.Model(inputs, {"answer": keras.layers.Dense(3, activation="softmax", name="answer")(inputs)})
    x, y = np.zeros((4, 2), np.float32), np.zeros(4, np.int32)  # zero inputs: the kernel's gradient is 0
    for decay in (0.0, 0.5):
        model.get_layer("answer").kernel.assign(np.ones((2, 3), np.float32))
        compile_model(model, optimizer="adam", learning_rate=0.1, weight_decay=decay, jit_compile=False)
        model.fit(x, {"answer": y}, batch_size=4, epochs=1, verbose=0)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(model.get_layer("answer").kernel),
                                   np.full((2, 3), 1 - 0.1 * decay), rtol=1e-6)


def test_lstm_dropout_is_on_each_lstm_layers_inputs(embeddings):
    model = build_lstm(embeddings=embeddings, num_answers=K, lstm_units=4, hidden_units=4, lstm_dropout=0.25)
    assert [model.get_layer(f"lstm_{i}").dropout for i in (1, 2, 3)] == [0.25] * 3
    tutorial = build_lstm(embeddings=embeddings, num_answers=K, lstm_units=4, hidden_units=4)
    assert {tutorial.get_layer(f"lstm_{i}").dropout for i in (1, 2, 3)} == {0.0}


def test_bag_of_words_is_the_sum_of_the_question_word_vectors(embeddings):
    model = build_mlp(embeddings=embeddings, num_answers=K, image_dim=4, hidden_units=2,
                      norm_question=False, norm_image=False)
    probe = keras.Model(model.inputs, model.get_layer("bag_of_words").output)
    tokens = np.array([[2, 3, 1, 0, 0], [9, 9, 0, 0, 0]], dtype=np.int32)
    out = np.asarray(probe({"question": tokens, "image_features": np.zeros((2, 4), np.float32)}))
    np.testing.assert_allclose(out, [embeddings[[2, 3]].sum(0), 2 * embeddings[9]], rtol=1e-5)
    assert not model.get_layer("word_vectors").trainable


def test_norm_flags_unit_normalise_the_inputs(embeddings):
    model = build_mlp(embeddings=embeddings, num_answers=K, image_dim=4, hidden_units=2)
    probe = keras.Model(model.inputs, model.get_layer("merge").output)
    inputs = {"question": np.array([[4, 5, 0]], np.int32), "image_features": np.array([[3.0, 4.0, 0.0, 0.0]], np.float32)}
    merged = np.asarray(probe(inputs))[0]
    np.testing.assert_allclose(np.linalg.norm(merged[:WORD]), 1.0, rtol=1e-5)
    np.testing.assert_allclose(merged[WORD:], [0.6, 0.8, 0.0, 0.0], rtol=1e-5)


def test_lstm_ignores_padding(embeddings):
    model = build_lstm(embeddings=embeddings, num_answers=K, image_dim=4, lstm_units=3, hidden_units=4)
    probe = keras.Model(model.inputs, model.get_layer("lstm_3").output)
    image = np.zeros((1, 4), np.float32)
    short, padded, other = (np.asarray(probe({"question": np.array([q], np.int32), "image_features": image}))
                            for q in ([2, 7, 4], [2, 7, 4, 0, 0, 0], [2, 7, 5, 0, 0, 0]))
    np.testing.assert_allclose(short, padded, rtol=1e-5, atol=1e-7)
    assert np.abs(short - other).max() > 1e-3


@pytest.mark.parametrize("builder", [build_mlp, build_lstm])
def test_models_reload_in_safe_mode_with_same_predictions(tmp_path, embeddings, builder):
    model = compile_model(builder(embeddings=embeddings, num_answers=K, image_dim=8, hidden_units=4))
    inputs = {"question": np.array([[2, 3, 4, 0], [5, 0, 0, 0]], np.int32),
              "image_features": np.random.default_rng(2).random((2, 8)).astype(np.float32)}
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(reloaded.predict(inputs, verbose=0)["answer"], model.predict(inputs, verbose=0)["answer"],
                               rtol=1e-6)
    np.testing.assert_array_equal(reloaded.get_layer("word_vectors").get_weights()[0], embeddings)
    assert any(isinstance(layer, MaskedSum) for layer in reloaded.layers) == (builder is build_mlp)


def test_image_standardisation_precedes_the_l2_norm_and_reloads(tmp_path):
    embeddings = np.zeros((10, 300), np.float32)
    mean, variance = np.full(8, 2.0, np.float32), np.full(8, 4.0, np.float32)
    model = build_mlp(embeddings=embeddings, num_answers=5, image_dim=8, hidden_units=16,
                      image_statistics=(mean, variance))
    names = [layer.name for layer in model.layers]
    assert names.index("image_standardize") < names.index("image_norm")
    image = np.arange(8, dtype=np.float32)[None]
    probe = keras.Model(model.inputs, model.get_layer("image_norm").output)
    expected = (image - 2.0) / 2.0
    np.testing.assert_allclose(probe({"question": np.zeros((1, 3), np.int32), "image_features": image}),
                               expected / np.linalg.norm(expected), rtol=1e-5)
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    inputs = {"question": np.array([[1, 2, 0]], np.int32), "image_features": image}
    np.testing.assert_allclose(reloaded.predict(inputs, verbose=0)["answer"],
                               model.predict(inputs, verbose=0)["answer"], rtol=1e-5)


# --------------------------------------------------------------------------- the stacked attention network
def san_inputs(grid, n=3, channels=512, seed=1):
    rng = np.random.default_rng(seed)
    return {"question": np.array([[2, 3, 4, 0], [5, 0, 0, 0], [6, 7, 8, 9]][:n], dtype=np.int32),
            "image_features": rng.normal(size=(n, grid, grid, channels)).astype(np.float32)}


def test_san_topology_and_parameter_counts_at_the_papers_sizes(embeddings):
    """Yang et al. 2016 on VQA: LSTM d = 1024, two attention layers (k = 512 here), 14 x 14 x 512 regions."""
    d, k, S, C, answers = 1024, 512, 14, 512, 1000
    statistics = (np.zeros(C, np.float32), np.ones(C, np.float32))
    model = build_san(embeddings=embeddings, num_answers=answers, grid_size=S, question_units=d, attention_units=k,
                      image_statistics=statistics)
    assert layer_summary(model) == [
        ("image_standardize", "Normalization"), ("coordinates", "GridCoordinates"), ("word_vectors", "Embedding"),
        ("regions", "Reshape"), ("question_norm", "UnitNormalization"), ("region_projection", "Dense"),
        ("question_lstm", "LSTM"), ("attention_1", "StackedAttention"), ("attention_2", "StackedAttention"),
        ("attention_map_1", "Reshape"), ("attention_map_2", "Reshape"), ("dropout", "Dropout"),
        ("attention_maps", "Concatenate"), ("answer", "Dense"), ("attention", "Activation")]
    # W_I (no bias: the query's bias b_A is the sum's), W_Q + b_A, W_P + b_P.
    attention_layer = d * k + (d * k + k) + (k + 1)
    assert model.get_layer("attention_1").count_params() == attention_layer
    assert model.get_layer("region_projection").count_params() == dense(C + 2, d)  # + (row, column)
    expected = lstm(WORD, d) + dense(C + 2, d) + 2 * attention_layer + dense(d, answers)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == expected == 9_078_762
    assert model.get_layer("region_projection").get_config()["activation"] == "tanh"
    assert dict(model.output)["attention"].shape == (None, 2, S * S)


def test_san_attention_is_a_distribution_over_the_regions_per_layer(embeddings):
    model = build_san(embeddings=embeddings, num_answers=K, grid_size=3, question_units=8, attention_units=4,
                      attention_layers=3)
    outputs = model(san_inputs(3), training=False)
    attention = np.asarray(outputs["attention"])
    assert attention.shape == (3, 3, 9)
    assert np.all(attention >= 0) and np.allclose(attention.sum(axis=-1), 1.0, atol=1e-5)
    assert np.allclose(np.asarray(outputs["answer"]).sum(axis=-1), 1.0, atol=1e-5)


def test_grid_coordinates_give_each_region_its_row_and_column():
    grid = np.zeros((1, 3, 3, 2), np.float32)
    out = np.asarray(GridCoordinates()(grid))
    assert out.shape == (1, 3, 3, 4)
    assert np.allclose(out[0, :, :, 2], [[-1] * 3, [0] * 3, [1] * 3])  # row: top = -1
    assert np.allclose(out[0, :, :, 3], [[-1, 0, 1]] * 3)  # column: left = -1


def test_coordinates_are_a_flag(embeddings):
    with_xy = build_san(embeddings=embeddings, num_answers=K, grid_size=2, question_units=4, attention_units=2)
    without = build_san(embeddings=embeddings, num_answers=K, grid_size=2, question_units=4, attention_units=2,
                        coordinates=False)
    assert "coordinates" not in [layer.name for layer in without.layers]
    assert (with_xy.get_layer("region_projection").count_params()
            - without.get_layer("region_projection").count_params()) == 2 * 4


def test_san_training_view_shares_weights_and_the_model_reloads_in_safe_mode(tmp_path, embeddings):
    model = build_san(embeddings=embeddings, num_answers=K, grid_size=2, question_units=8, attention_units=4)
    trainer = compile_model(answer_only(model), optimizer="adam")
    assert list(trainer.output) == ["answer"] and answer_only(trainer) is trainer
    inputs = san_inputs(2, n=3)
    before = np.asarray(model(inputs, training=False)["answer"])
    trainer.fit(inputs, {"answer": np.array([0, 1, 2])}, epochs=2, verbose=0)
    after = model(inputs, training=False)
    assert not np.allclose(before, np.asarray(after["answer"]))  # fitting the view trained the model
    model.save(tmp_path / "san.keras")
    reloaded = keras.saving.load_model(tmp_path / "san.keras", safe_mode=True)
    again = reloaded(inputs, training=False)
    for name in ("answer", "attention"):
        assert np.allclose(np.asarray(after[name]), np.asarray(again[name]), atol=1e-6)


@pytest.mark.slow
def test_a_trained_san_attends_to_the_object_the_question_names():
    outputs, val_labels, val_targets = fit_on_binding_scenes(build_san)
    assert np.mean(np.asarray(outputs["answer"]).argmax(-1) == val_labels) > 0.95
    attention = np.asarray(outputs["attention"])  # (N, 2, 9)
    for layer in range(2):  # each layer's peak is the named shape's region
        assert np.mean(attention[:, layer].argmax(-1) == val_targets) > 0.9
    assert np.mean(attention[np.arange(len(val_targets)), 1, val_targets]) > 0.5  # and holds most of the weight
