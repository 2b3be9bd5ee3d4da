"""`--tutorial-recipe` end to end: the model built and compiled through the real config path is the tutorial's.

The tutorial's values (its post and code, /work/shared/seed/vqa-tutorial.txt; docs/training.md): RMSprop at
Keras' default rate 0.001 and epsilon 1e-7 with no schedule, dropout 0.5 after every hidden layer, 'uniform'
(RandomUniform(-0.05, 0.05)) Dense kernels (its LSTM script left the output layer at glorot_uniform), raw
inputs (the summed word vectors and the fc7 vector concatenated as they are), batch 128 / 256, 100 / 90 epochs.
"""

import keras
import numpy as np
import pytest

from vqa.callbacks import schedule_callbacks, training_callbacks
from vqa.config import TrainConfig
from vqa.train import build_model

VOCABULARY, ANSWERS, IMAGE_DIM = 12, 7, 4096
RAW_SCALING = (keras.layers.Normalization, keras.layers.UnitNormalization)


def statistics(dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A (mean, variance) pair far from (0, 1), so that any standardisation left in would show."""
    rng = np.random.default_rng(seed)
    return rng.normal(5.0, 1.0, dim).astype("float32"), rng.uniform(4.0, 9.0, dim).astype("float32")


@pytest.fixture(scope="module", params=["mlp", "lstm"])
def recipe(request):
    """(kind, config, model, trainer): the tutorial recipe's model, built and compiled by vqa.train."""
    kind = request.param
    config = TrainConfig.for_model(kind, tutorial_recipe=True)
    embeddings = np.random.default_rng(0).normal(0, 30, (VOCABULARY, 300)).astype("float32")
    embeddings[0] = 0  # padding
    # Statistics are offered as train_model would offer them; the recipe must not use them.
    model, trainer = build_model(config, embeddings=embeddings, num_answers=ANSWERS, image_shape=(IMAGE_DIM,),
                                 image_statistics=statistics(IMAGE_DIM, 1), question_statistics=statistics(300, 2))
    return kind, config, model, trainer, embeddings


def test_recipe_sizes_batches_and_epochs_are_the_tutorials(recipe):
    kind, config, model, _, _ = recipe
    assert (config.epochs, config.batch_size) == {"mlp": (100, 128), "lstm": (90, 256)}[kind]
    assert (config.hidden_units, config.hidden_layers, config.activation) == (1024, 3, "tanh")
    hidden = [model.get_layer(f"hidden_{i}") for i in (1, 2, 3)]
    assert all(layer.units == 1024 and layer.activation is keras.activations.tanh for layer in hidden)
    if kind == "mlp":
        assert model.get_layer("hidden_0").activation is keras.activations.linear  # the tutorial's first layer
    else:
        lstms = [layer for layer in model.layers if isinstance(layer, keras.layers.LSTM)]
        assert [layer.units for layer in lstms] == [512, 512, 512]


def test_recipe_optimiser_is_keras_rmsprop_at_a_fixed_rate(recipe):
    _, _, _, trainer, _ = recipe
    optimizer = trainer.optimizer
    assert type(optimizer) is keras.optimizers.RMSprop
    assert float(optimizer.learning_rate) == pytest.approx(0.001) and optimizer.epsilon == 1e-7
    assert (optimizer.rho, optimizer.momentum, optimizer.centered) == (0.9, 0.0, False)  # Keras 2's defaults too
    assert optimizer.clipnorm is None and optimizer.global_clipnorm is None and optimizer.weight_decay is None
    assert type(trainer.loss["answer"]) is keras.losses.SparseCategoricalCrossentropy


def test_recipe_dropout_is_one_half_after_every_hidden_layer_and_none_in_the_lstm(recipe):
    kind, _, model, _, _ = recipe
    rates = {layer.name: layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)}
    names = [f"dropout_{i}" for i in ((0, 1, 2, 3) if kind == "mlp" else (1, 2, 3))]
    assert rates == dict.fromkeys(names, 0.5)
    for layer in model.layers:
        if isinstance(layer, keras.layers.LSTM):
            assert (layer.dropout, layer.recurrent_dropout) == (0.0, 0.0)


def test_recipe_initialisers_are_the_tutorials(recipe):
    kind, _, model, _, _ = recipe
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    uniform = [layer.name for layer in dense if isinstance(layer.kernel_initializer, keras.initializers.RandomUniform)
               and (layer.kernel_initializer.minval, layer.kernel_initializer.maxval) == (-0.05, 0.05)]
    if kind == "mlp":
        assert uniform == ["hidden_0", "hidden_1", "hidden_2", "hidden_3", "answer"]
    else:  # the tutorial's LSTM script left its output layer at Keras' default
        assert uniform == ["hidden_1", "hidden_2", "hidden_3"]
        assert isinstance(model.get_layer("answer").kernel_initializer, keras.initializers.GlorotUniform)
    kernels = np.concatenate([model.get_layer(name).kernel.numpy().ravel() for name in uniform])
    assert -0.05 <= kernels.min() < -0.049 and 0.049 < kernels.max() <= 0.05  # drawn from U(-0.05, 0.05)


def test_recipe_feeds_the_raw_inputs(recipe):
    kind, _, model, _, embeddings = recipe
    assert not [layer.name for layer in model.layers if isinstance(layer, RAW_SCALING)]
    tokens = np.array([[3, 5, 7, 0, 0], [11, 2, 0, 0, 0]], "int32")
    image = np.random.default_rng(3).uniform(0, 20, (2, IMAGE_DIM)).astype("float32")  # a ReLU fc7 is >= 0
    merge = keras.Model(model.inputs, model.get_layer("merge").output)
    merged = np.asarray(merge.predict_on_batch({"question": tokens, "image_features": image}))
    np.testing.assert_allclose(merged[:, -IMAGE_DIM:], image, rtol=1e-6)  # the fc7 vector as it is
    if kind == "mlp":  # the question: the plain sum of its word vectors
        np.testing.assert_allclose(merged[:, :300], embeddings[tokens].sum(axis=1), rtol=1e-5, atol=1e-3)


def test_recipe_callbacks_have_no_learning_rate_schedule(recipe, tmp_path):
    _, config, model, _, _ = recipe
    assert config.lr_schedule == "none" and schedule_callbacks(config, has_val=True) == []
    callbacks = training_callbacks(config, model, tmp_path, tmp_path / "Graph", has_val=True, coverage=1.0,
                                   resuming=False)
    schedules = (keras.callbacks.ReduceLROnPlateau, keras.callbacks.LearningRateScheduler)
    assert not [type(c).__name__ for c in callbacks if isinstance(c, schedules)]
    assert any(isinstance(c, keras.callbacks.TensorBoard) for c in callbacks)  # the tutorial's ./Graph logs


# --------------------------------------------------------------------------- RMSprop's update rule
def rmsprop_steps(gradients: list[np.ndarray], *, learning_rate, rho, epsilon, keras2: bool) -> np.ndarray:
    """The weight after RMSprop steps from 0 by hand: Keras 3 divides by sqrt(v + eps), Keras 2 by sqrt(v) + eps."""
    weight, velocity = np.zeros_like(gradients[0], np.float64), np.zeros_like(gradients[0], np.float64)
    for gradient in gradients:
        velocity = rho * velocity + (1 - rho) * gradient.astype(np.float64) ** 2
        denominator = np.sqrt(velocity) + epsilon if keras2 else np.sqrt(velocity + epsilon)
        weight = weight - learning_rate * gradient / denominator
    return weight


def test_recipe_rmsprop_puts_epsilon_inside_the_square_root(recipe):
    """--tutorial-recipe runs Keras 3's RMSprop update, not Keras 2's (the tutorial's): a documented departure.

    Keras 2 (the tutorial's): w -= lr * g / (sqrt(v) + eps). Keras 3: w -= lr * g / sqrt(v + eps). With
    eps = 1e-7 the two agree for gradients well above sqrt(eps) ~ 3e-4 and differ ~10x at 1e-4.
    """
    _, _, _, trainer, _ = recipe
    optimizer = keras.optimizers.RMSprop.from_config(trainer.optimizer.get_config())  # the same settings, fresh
    variable = keras.Variable(np.zeros(4, "float32"))
    gradients = [np.array([1e-4, 1e-3, 0.1, -1.0], "float32"), np.array([2e-4, -1e-3, 0.05, 1.0], "float32")]
    for gradient in gradients:
        optimizer.apply_gradients([(keras.ops.convert_to_tensor(gradient), variable)])
    settings = dict(learning_rate=0.001, rho=0.9, epsilon=1e-7)
    keras3, keras2 = (rmsprop_steps(gradients, **settings, keras2=flag) for flag in (False, True))
    np.testing.assert_allclose(variable.numpy(), keras3, rtol=1e-5)
    assert abs(keras2[0]) > 5 * abs(keras3[0])  # the tutorial's rule moves a tiny-gradient weight much further
    np.testing.assert_allclose(keras3[2:], keras2[2:], rtol=1e-4)  # and agrees on large gradients
