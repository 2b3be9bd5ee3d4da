"""The tutorial's two networks and its "way forward" as Keras 3 functional models: the
bag-of-words MLP, the 3x512 LSTM and the stacked attention network (SAN, Yang et al. 2016).

Both take token ids, not word vectors: a frozen ``Embedding`` initialised with the
preprocessed spaCy matrix turns them into exactly the vectors the tutorial
computed with spaCy on every batch (padding masked; OOV rows are zero, as spaCy's
OOV vectors were). Only ``keras`` / ``keras.ops`` is used, so any backend runs them.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from vqa.artifacts import IMAGE_FEATURE_DIM
from vqa.config import KERNEL_INITIALIZER

# The builders' keyword defaults are the tutorial's topology (tests/test_models.py holds them to
# vqa.config.TUTORIAL_RECIPE); `vqa train` passes every size from its TrainConfig. The tutorial's
# LSTM script left the output layer at Keras' default, glorot_uniform.
LSTM_OUTPUT_INITIALIZER = "glorot_uniform"
# --optimizer name -> Keras class (vqa.config.OPTIMIZERS names the same two).
OPTIMIZERS = {"adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop}


@keras.saving.register_keras_serializable(package="vqa")
class MaskedSum(keras.layers.Layer):
    """Sum a masked sequence over time: the tutorial's bag-of-words question vector.

    Args (call):
        inputs: float (batch, steps, dim) word vectors.
        mask: bool (batch, steps), False at padding (from ``Embedding(mask_zero=True)``).
    Returns:
        float (batch, dim): the sum of the unmasked word vectors.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is not None:
            inputs = inputs * ops.expand_dims(ops.cast(mask, inputs.dtype), -1)
        return ops.sum(inputs, axis=1)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


def _inputs(image_dim: int) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """The two named inputs: token ids of any length and the fc7 image vector."""
    question = keras.Input(shape=(None,), dtype="int32", name="question")
    image = keras.Input(shape=(image_dim,), dtype="float32", name="image_features")
    return question, image


def _word_vectors(question, embeddings: np.ndarray):
    """Frozen, padding-masked lookup of the spaCy vectors (weights set after building)."""
    layer = keras.layers.Embedding(
        embeddings.shape[0], embeddings.shape[1], mask_zero=True, trainable=False, name="word_vectors"
    )
    vectors = layer(question)
    layer.set_weights([np.asarray(embeddings, dtype="float32")])
    return vectors


def _classifier(merged, *, num_answers, hidden_units, hidden_layers, dropout, activation,
                kernel_initializer=KERNEL_INITIALIZER, output_initializer=KERNEL_INITIALIZER,
                output_activation="softmax"):
    """The tutorial's head: hidden_layers x (Dense, tanh -> Dropout) -> Dense K softmax (or sigmoid)."""
    x = merged
    for i in range(hidden_layers):
        x = keras.layers.Dense(hidden_units, activation=activation,
                               kernel_initializer=kernel_initializer, name=f"hidden_{i + 1}")(x)
        x = keras.layers.Dropout(dropout, name=f"dropout_{i + 1}")(x)
    return _answer(x, num_answers, output_activation, output_initializer)


def _answer(x, num_answers: int, output_activation: str, output_initializer):
    """The "answer" layer: Dense K, float32 (numerically safe under mixed precision), softmax or sigmoid.

    A sigmoid (``--loss soft``) starts every answer near 1/K (bias -log K) instead of 0.5: with K
    independent outputs at 0.5 the first updates only push all K down, and on real questions the
    model then settles on the few commonest answers.
    """
    bias = keras.initializers.Constant(-float(np.log(num_answers))) if output_activation == "sigmoid" else "zeros"
    return keras.layers.Dense(num_answers, activation=output_activation, kernel_initializer=output_initializer,
                              bias_initializer=bias, dtype="float32", name="answer")(x)


def _standardize(x, statistics: tuple[np.ndarray, np.ndarray], *, name: str):
    """Standardise each feature of ``x`` with fixed (mean, variance) computed on the training set."""
    mean, variance = statistics
    return keras.layers.Normalization(mean=np.asarray(mean, "float32"), variance=np.asarray(variance, "float32"),
                                      name=name)(x)


def _image_branch(image, norm_image: bool, image_statistics=None):
    """The image vector: standardised per feature when statistics are given, then L2-normalised
    when asked (the VQA paper's "norm I")."""
    if image_statistics is not None:
        image = _standardize(image, image_statistics, name="image_standardize")
    return keras.layers.UnitNormalization(name="image_norm")(image) if norm_image else image


def build_mlp(*, embeddings: np.ndarray, num_answers: int, image_dim: int = IMAGE_FEATURE_DIM,
              hidden_units: int = 1024, hidden_layers: int = 3, dropout: float = 0.5,
              activation: str = "tanh", norm_question: bool = True, norm_image: bool = True,
              image_statistics: tuple[np.ndarray, np.ndarray] | None = None,
              kernel_initializer: str = KERNEL_INITIALIZER, first_initializer: str = KERNEL_INITIALIZER,
              first_dropout: float | None = None,
              question_statistics: tuple[np.ndarray, np.ndarray] | None = None,
              output_activation: str = "softmax") -> keras.Model:
    """Build the tutorial's bag-of-words MLP.

    Topology (the tutorial's code): [sum of word vectors ; image] -> Dense(hidden_units),
    linear -> Dropout -> hidden_layers x (Dense, tanh -> Dropout) -> Dense(num_answers) softmax.

    Args:
        embeddings: float32 (V, 300) word-vector matrix; row 0 = padding.
        num_answers: K, the number of answer classes.
        image_dim: size of the image feature vector (4096 for VGG16 fc7).
        hidden_units, hidden_layers, dropout, activation: the tutorial's 1024, 3, 0.5, "tanh".
        norm_question: L2-normalise the summed question vector.
        norm_image: L2-normalise the image vector.
        image_statistics: (mean, variance), float32 (image_dim,) each, of the training images'
            features: standardise each feature with them first (None: no standardisation).
        kernel_initializer: the tanh and output layers' initialiser (the tutorial's "uniform").
        first_initializer: the first (linear) layer's initialiser (the tutorial's "uniform").
        first_dropout: dropout after the first layer (None: ``dropout``, as the tutorial).
        question_statistics: (mean, variance), float32 (300,) each, of the training questions'
            summed word vectors: standardise the sum with them before its L2 norm (None: don't).
        output_activation: "softmax" (``--loss modal``, the tutorial's) or "sigmoid" (``--loss soft``).
    Returns:
        keras.Model "mlp": {"question": int32 (batch, T), "image_features": float32 (batch, image_dim)}
        -> "answer": float32 (batch, num_answers) softmax.
    """
    question, image = _inputs(image_dim)
    words = MaskedSum(name="bag_of_words")(_word_vectors(question, embeddings))
    if question_statistics is not None:
        # Questions share a large common direction (mean cosine 0.66 on real VQA questions).
        words = _standardize(words, question_statistics, name="question_standardize")
    if norm_question:
        words = keras.layers.UnitNormalization(name="question_norm")(words)
    merged = keras.layers.Concatenate(name="merge")([words, _image_branch(image, norm_image, image_statistics)])
    # The tutorial's first layer has no activation (linear), only dropout.
    x = keras.layers.Dense(hidden_units, kernel_initializer=first_initializer, name="hidden_0")(merged)
    x = keras.layers.Dropout(dropout if first_dropout is None else first_dropout, name="dropout_0")(x)
    answer = _classifier(x, num_answers=num_answers, hidden_units=hidden_units, hidden_layers=hidden_layers,
                         dropout=dropout, activation=activation, kernel_initializer=kernel_initializer,
                         output_initializer=kernel_initializer, output_activation=output_activation)
    return keras.Model({"question": question, "image_features": image}, {"answer": answer}, name="mlp")


def build_lstm(*, embeddings: np.ndarray, num_answers: int, image_dim: int = IMAGE_FEATURE_DIM,
               lstm_units: int = 512, lstm_layers: int = 3, hidden_units: int = 1024,
               hidden_layers: int = 3, dropout: float = 0.5, activation: str = "tanh",
               norm_question: bool = False, norm_image: bool = True,
               image_statistics: tuple[np.ndarray, np.ndarray] | None = None,
               kernel_initializer: str = KERNEL_INITIALIZER,
               output_initializer: str = LSTM_OUTPUT_INITIALIZER, lstm_dropout: float = 0.0,
               output_activation: str = "softmax") -> keras.Model:
    """Build the tutorial's recurrent model: 3 stacked LSTM(512) merged with the image.

    Topology (the tutorial's code): word vectors -> lstm_layers x LSTM(lstm_units) (the last
    returns its final output) ; image -> concat -> hidden_layers x (Dense, tanh -> Dropout)
    -> Dense(num_answers) softmax. ``hidden_layers=0`` is the prose's single FC layer.
    The LSTMs keep the cuDNN-eligible defaults (tanh, sigmoid gates, no recurrent dropout);
    the tutorial's Keras 2 code used hard_sigmoid gates, which would rule cuDNN out.

    Args:
        embeddings: float32 (V, 300) word-vector matrix; row 0 = padding.
        num_answers: K, the number of answer classes.
        image_dim: size of the image feature vector (4096 for VGG16 fc7).
        lstm_units, lstm_layers: the tutorial's 512 and 3.
        hidden_units, hidden_layers, dropout, activation: the tutorial's 1024, 3, 0.5, "tanh".
        norm_question: L2-normalise each word vector before the LSTM.
        norm_image: L2-normalise the image vector.
        image_statistics: (mean, variance), float32 (image_dim,) each, of the training images'
            features: standardise each feature with them first (None: no standardisation).
        kernel_initializer: the tanh layers' initialiser (the tutorial's "uniform").
        output_initializer: the softmax layer's (the tutorial's code: Keras' default glorot_uniform).
        lstm_dropout: dropout on each LSTM's inputs (word vectors, then the layer below's outputs;
            Keras' ``LSTM(dropout=...)``, still cuDNN-eligible); the tutorial's 0.
        output_activation: "softmax" (``--loss modal``, the tutorial's) or "sigmoid" (``--loss soft``).
    Returns:
        keras.Model "lstm": {"question": int32 (batch, T), "image_features": float32 (batch, image_dim)}
        -> "answer": float32 (batch, num_answers) softmax.
    """
    question, image = _inputs(image_dim)
    x = _word_vectors(question, embeddings)
    if norm_question:
        x = keras.layers.UnitNormalization(name="question_norm")(x)
    for i in range(lstm_layers):
        x = keras.layers.LSTM(lstm_units, return_sequences=i < lstm_layers - 1, dropout=lstm_dropout,
                              name=f"lstm_{i + 1}")(x)
    merged = keras.layers.Concatenate(name="merge")([x, _image_branch(image, norm_image, image_statistics)])
    answer = _classifier(merged, num_answers=num_answers, hidden_units=hidden_units, hidden_layers=hidden_layers,
                         dropout=dropout, activation=activation, kernel_initializer=kernel_initializer,
                         output_initializer=output_initializer, output_activation=output_activation)
    return keras.Model({"question": question, "image_features": image}, {"answer": answer}, name="lstm")


@keras.saving.register_keras_serializable(package="vqa")
class GridCoordinates(keras.layers.Layer):
    """Append each region's normalised (row, column) to its feature: where a region is.

    The SAN's regions are an unordered set to the attention sum; these two channels let a
    question such as "what shape is at the top left?" be answered (a departure from the
    paper, ``--no-coordinates`` turns it off).

    Args (call):
        inputs: float (batch, S, S, C) grid features.
    Returns:
        float (batch, S, S, C + 2): the features, then row and column, each in [-1, 1]
        (-1 = top / left), so they sit on the scale of standardised features.
    """

    def call(self, inputs):
        size = ops.shape(inputs)[1]
        steps = ops.cast(ops.arange(size), inputs.dtype)
        axis = 2.0 * steps / ops.maximum(ops.cast(size - 1, inputs.dtype), 1.0) - 1.0
        rows = ops.broadcast_to(axis[:, None], (size, size))
        columns = ops.broadcast_to(axis[None, :], (size, size))
        grid = ops.stack([rows, columns], axis=-1)[None]
        grid = ops.broadcast_to(grid, (ops.shape(inputs)[0], size, size, 2))
        return ops.concatenate([inputs, grid], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] + 2)


@keras.saving.register_keras_serializable(package="vqa")
class StackedAttention(keras.layers.Layer):
    """One attention layer of the SAN (Yang et al. 2016, eq. 15-17 with the query refinement):

        h = tanh(W_I v_I (+) (W_Q u + b_A))      (batch, m, k); (+) adds the query to every region
        p = softmax over the m regions of (W_P h + b_P)
        u_next = sum_i p_i v_i + u

    Args:
        units: k, the attention's hidden size.
        dropout: dropout on h while training (the paper used dropout; 0 turns it off).
    Args (call):
        regions: float (batch, m, d) region vectors v_I.
        query: float (batch, d) the query u (v_Q for the first layer).
    Returns:
        (u_next float (batch, d), p float (batch, m)): the refined query and the attention,
        which sums to 1 over the regions.
    """

    def __init__(self, units: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.units, self.dropout = int(units), float(dropout)
        self.image_projection = keras.layers.Dense(self.units, use_bias=False, name="image_projection")
        self.query_projection = keras.layers.Dense(self.units, name="query_projection")
        self.hidden_dropout = keras.layers.Dropout(self.dropout)
        self.score = keras.layers.Dense(1, name="score")

    def build(self, regions_shape, query_shape):
        self.image_projection.build(regions_shape)
        self.query_projection.build(query_shape)
        self.score.build((*regions_shape[:-1], self.units))
        self.built = True

    def call(self, regions, query, training=None):
        hidden = ops.tanh(self.image_projection(regions) + ops.expand_dims(self.query_projection(query), 1))
        hidden = self.hidden_dropout(hidden, training=training)
        attention = ops.softmax(ops.squeeze(self.score(hidden), -1), axis=-1)
        attended = ops.sum(ops.expand_dims(attention, -1) * regions, axis=1)
        return attended + query, attention

    def compute_output_shape(self, regions_shape, query_shape):
        return tuple(query_shape), tuple(regions_shape[:-1])

    def get_config(self):
        return {**super().get_config(), "units": self.units, "dropout": self.dropout}


def _question_and_regions(embeddings: np.ndarray, *, grid_size: int, channels: int, question_units: int,
                          question_layers: int, norm_question: bool, coordinates: bool, image_statistics):
    """The attention models' shared start: their two inputs, the question vector (the last LSTM's
    output over the masked, optionally L2-normalised word vectors) and the S*S regions (standardised,
    with their coordinates when asked), as (question input, image input, query, regions)."""
    question = keras.Input(shape=(None,), dtype="int32", name="question")
    image = keras.Input(shape=(grid_size, grid_size, channels), dtype="float32", name="image_features")
    words = _word_vectors(question, embeddings)
    if norm_question:
        words = keras.layers.UnitNormalization(name="question_norm")(words)
    for i in range(question_layers - 1):
        words = keras.layers.LSTM(question_units, return_sequences=True, name=f"question_lstm_{i + 1}")(words)
    query = keras.layers.LSTM(question_units, name="question_lstm")(words)
    regions = image if image_statistics is None else _standardize(image, image_statistics, name="image_standardize")
    if coordinates:
        regions = GridCoordinates(name="coordinates")(regions)
    regions = keras.layers.Reshape((grid_size * grid_size, regions.shape[-1]), name="regions")(regions)
    return question, image, query, regions


def build_san(*, embeddings: np.ndarray, num_answers: int, grid_size: int, channels: int = 512,
              question_units: int = 1024, question_layers: int = 1, attention_units: int = 512,
              attention_layers: int = 2,
              dropout: float = 0.5, coordinates: bool = True, norm_question: bool = True,
              image_statistics: tuple[np.ndarray, np.ndarray] | None = None,
              output_initializer: str = LSTM_OUTPUT_INITIALIZER,
              output_activation: str = "softmax") -> keras.Model:
    """Build the stacked attention network over a grid of VGG16 ``block5_pool`` features.

    Topology (Yang et al. 2016, "Stacked Attention Networks for Image Question Answering"):
    question: word vectors -> LSTM(d), final output = v_Q; image: each of the S*S regions
    (+ its (row, column) when ``coordinates``) -> Dense(d) tanh = v_I; ``attention_layers`` x
    :class:`StackedAttention` (u_0 = v_Q); Dropout -> Dense(num_answers) softmax on u_L.

    Args:
        embeddings: float32 (V, 300) word-vector matrix; row 0 = padding.
        num_answers: K, the number of answer classes.
        grid_size: S (14 for 448-pixel images, 7 for 224).
        channels: C, features per region (512 for VGG16).
        question_units: d, the LSTM's size and the region vectors' (the paper: 1024 on VQA).
        question_layers: stacked LSTMs of the question encoder (the paper: 1).
        attention_units: k, each attention layer's hidden size.
        attention_layers: stacked attention layers (the paper: 2).
        dropout: on the attention hidden layers and before the softmax.
        coordinates: append each region's normalised (row, column) before the projection.
        norm_question: L2-normalise each word vector before the LSTM.
        image_statistics: (mean, variance), float32 (C,) each, of the training regions'
            channels: standardise each channel with them first (None: no standardisation).
        output_initializer: the softmax layer's initialiser.
        output_activation: "softmax" (``--loss modal``) or "sigmoid" (``--loss soft``).
    Returns:
        keras.Model "san": {"question": int32 (batch, T), "image_features": float32 (batch, S, S, C)}
        -> {"answer": float32 (batch, K) softmax, "attention": float32 (batch, L, S*S)}, the
        attention of each layer over the regions in row-major order (training ignores it).
    """
    question, image, query, regions = _question_and_regions(
        embeddings, grid_size=grid_size, channels=channels, question_units=question_units,
        question_layers=question_layers, norm_question=norm_question, coordinates=coordinates,
        image_statistics=image_statistics)
    regions = keras.layers.Dense(question_units, activation="tanh", name="region_projection")(regions)
    maps = []
    for i in range(attention_layers):
        query, attention = StackedAttention(attention_units, dropout, name=f"attention_{i + 1}")(regions, query)
        maps.append(keras.layers.Reshape((1, grid_size * grid_size), name=f"attention_map_{i + 1}")(attention))
    attention = maps[0] if len(maps) == 1 else keras.layers.Concatenate(axis=1, name="attention_maps")(maps)
    attention = keras.layers.Activation("linear", dtype="float32", name="attention")(attention)
    x = keras.layers.Dropout(dropout, name="dropout")(query)
    answer = _answer(x, num_answers, output_activation, output_initializer)
    return keras.Model({"question": question, "image_features": image}, {"answer": answer, "attention": attention},
                       name="san")


@keras.saving.register_keras_serializable(package="vqa")
class GatedTanh(keras.layers.Layer):
    """The gated tanh layer of Teney et al. 2018: y = tanh(W x + b) * sigmoid(W' x + b').

    Args:
        units: the output size.
    Args (call):
        inputs: float (..., n).
    Returns:
        float (..., units), each value in (-1, 1).
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.dense = keras.layers.Dense(2 * self.units, name="dense")  # both halves in one product

    def build(self, input_shape):
        self.dense.build(input_shape)
        self.built = True

    def call(self, inputs):
        values, gates = ops.split(self.dense(inputs), 2, axis=-1)
        return ops.tanh(values) * ops.sigmoid(gates)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="vqa")
class TopDownGlimpse(keras.layers.Layer):
    """One question-guided glimpse of the top-down model (Anderson et al. 2018; Teney et al. 2018):

        a_i = w^T Dropout(v_i * g_Q(u)) + b          element-wise product fusion, g = gated tanh
        p = softmax over the m regions of a
        u_next = u + g_QJ(u) * g_VJ(sum_i p_i v_i)   the question fused with the attended image

    The regions v_i come projected once for every glimpse (``build_topdown``), so a glimpse
    costs the CPU little more than its products over the regions.

    Args:
        units: k, the size of the region vectors (and of the attention's fusion).
        query_units: d, the size of the query.
        dropout: dropout on the fused attention features while training.
    Args (call):
        regions: float (batch, m, k) region vectors.
        query: float (batch, d) the query u (the question vector for the first glimpse).
    Returns:
        (u_next float (batch, d), p float (batch, m)): the refined query and the attention,
        which sums to 1 over the regions.
    """

    def __init__(self, units: int, query_units: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.units, self.query_units, self.dropout = int(units), int(query_units), float(dropout)
        self.query_gate = GatedTanh(self.units, name="query_gate")
        self.fusion_dropout = keras.layers.Dropout(self.dropout)
        self.score = keras.layers.Dense(1, name="score")
        self.joint_query = GatedTanh(self.query_units, name="joint_query")
        self.joint_image = GatedTanh(self.query_units, name="joint_image")

    def build(self, regions_shape, query_shape):
        self.query_gate.build(query_shape)
        self.score.build(regions_shape)
        self.joint_query.build(query_shape)
        self.joint_image.build((regions_shape[0], regions_shape[-1]))
        self.built = True

    def call(self, regions, query, training=None):
        fused = self.fusion_dropout(regions * ops.expand_dims(self.query_gate(query), 1), training=training)
        attention = ops.softmax(ops.squeeze(self.score(fused), -1), axis=-1)
        attended = ops.sum(ops.expand_dims(attention, -1) * regions, axis=1)
        return query + self.joint_query(query) * self.joint_image(attended), attention

    def compute_output_shape(self, regions_shape, query_shape):
        return tuple(query_shape), tuple(regions_shape[:-1])

    def get_config(self):
        return {**super().get_config(), "units": self.units, "query_units": self.query_units,
                "dropout": self.dropout}


def build_topdown(*, embeddings: np.ndarray, num_answers: int, grid_size: int, channels: int = 512,
                  question_units: int = 512, question_layers: int = 1, attention_units: int = 512,
                  attention_layers: int = 2, dropout: float = 0.2, coordinates: bool = True,
                  norm_question: bool = True, image_statistics: tuple[np.ndarray, np.ndarray] | None = None,
                  output_initializer: str = LSTM_OUTPUT_INITIALIZER, output_activation: str = "softmax") -> keras.Model:
    """Build the top-down attention model over a grid of VGG16 ``block5_pool`` features.

    Topology (after Anderson et al. 2018 and Teney et al. 2018, "Tips and Tricks for Visual
    Question Answering", over grid regions instead of detected objects): question: word
    vectors -> LSTM(d), final output = q; image: each of the S*S regions (+ its (row, column)
    when ``coordinates``) -> gated tanh(k) = v_i; ``attention_layers`` x :class:`TopDownGlimpse`
    (u_0 = q), each fusing the question with what it attended by an element-wise product;
    gated tanh(d) -> Dropout -> Dense(num_answers) softmax on u_L.

    Args:
        embeddings: float32 (V, 300) word-vector matrix; row 0 = padding.
        num_answers: K, the number of answer classes.
        grid_size: S (14 for 448-pixel images, 7 for 224).
        channels: C, features per region (512 for VGG16).
        question_units: d, the LSTM's size and the joint vector's.
        question_layers: stacked LSTMs of the question encoder.
        attention_units: k, the region vectors' size, where each glimpse fuses them with the query.
        attention_layers: glimpses, each refining the query with what it saw.
        dropout: on each glimpse's fused features and before the softmax.
        coordinates: append each region's normalised (row, column) before the projection.
        norm_question: L2-normalise each word vector before the LSTM.
        image_statistics: (mean, variance), float32 (C,) each, of the training regions'
            channels: standardise each channel with them first (None: no standardisation).
        output_initializer: the softmax layer's initialiser.
        output_activation: "softmax" (``--loss modal``) or "sigmoid" (``--loss soft``).
    Returns:
        keras.Model "topdown": {"question": int32 (batch, T), "image_features": float32 (batch, S, S, C)}
        -> {"answer": float32 (batch, K) softmax, "attention": float32 (batch, L, S*S)}, each
        glimpse's attention over the regions in row-major order (training ignores it).
    """
    question, image, query, regions = _question_and_regions(
        embeddings, grid_size=grid_size, channels=channels, question_units=question_units,
        question_layers=question_layers, norm_question=norm_question, coordinates=coordinates,
        image_statistics=image_statistics)
    regions = GatedTanh(attention_units, name="region_projection")(regions)
    maps = []
    for i in range(attention_layers):
        glimpse = TopDownGlimpse(attention_units, question_units, dropout, name=f"glimpse_{i + 1}")
        query, attention = glimpse(regions, query)
        maps.append(keras.layers.Reshape((1, grid_size * grid_size), name=f"attention_map_{i + 1}")(attention))
    attention = maps[0] if len(maps) == 1 else keras.layers.Concatenate(axis=1, name="attention_maps")(maps)
    attention = keras.layers.Activation("linear", dtype="float32", name="attention")(attention)
    x = GatedTanh(question_units, name="answer_hidden")(query)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    answer = _answer(x, num_answers, output_activation, output_initializer)
    return keras.Model({"question": question, "image_features": image}, {"answer": answer, "attention": attention},
                       name="topdown")


def answer_only(model: keras.Model) -> keras.Model:
    """The model ``fit`` trains: ``model`` itself when "answer" is its only output, else a view
    sharing its layers with the "answer" output alone (the SAN's "attention" needs no label)."""
    outputs = model.output
    if not isinstance(outputs, dict) or list(outputs) == ["answer"]:
        return model
    return keras.Model(model.input, {"answer": model.output["answer"]}, name=model.name)


@keras.saving.register_keras_serializable(package="vqa")
def soft_binary_crossentropy(y_true, y_pred):
    """Binary cross-entropy summed over the K answers (Teney et al. 2018), per example.

    Args:
        y_true: float (batch, K) soft targets min(n/3, 1).
        y_pred: float (batch, K) sigmoid scores.
    """
    return ops.sum(ops.binary_crossentropy(y_true, y_pred), axis=-1)


@keras.saving.register_keras_serializable(package="vqa")
class SoftAccuracy(keras.metrics.MeanMetricWrapper):
    """The soft target of the top-scoring answer: its min(n/3, 1) credit, averaged ("accuracy" under ``soft``)."""

    def __init__(self, name="accuracy", dtype=None):
        super().__init__(_top_answer_credit, name=name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


def _top_answer_credit(y_true, y_pred):
    top = ops.argmax(y_pred, axis=-1)
    return ops.sum(y_true * ops.one_hot(top, ops.shape(y_true)[-1], dtype=y_true.dtype), axis=-1)


# --loss -> the output layer's activation (vqa.config.LOSSES names the same two).
OUTPUT_ACTIVATIONS = {"modal": "softmax", "soft": "sigmoid"}


def compile_model(model: keras.Model, *, learning_rate: float = 0.001, jit_compile="auto",
                  optimizer: str = "rmsprop", epsilon: float = 1e-7, clipnorm: float | None = None,
                  weight_decay: float = 0.0, loss: str = "modal") -> keras.Model:
    """Compile with categorical cross-entropy (on sparse labels); RMSprop, as the tutorial, by default.

    With ``loss="soft"`` (a sigmoid output): binary cross-entropy on dense soft targets, and an
    "accuracy" that is the mean min(n/3, 1) credit of the top answer.

    Args:
        model: a model from ``build_mlp`` / ``build_lstm``.
        learning_rate: step size (0.001: Keras' default, as the tutorial used).
        jit_compile: True, False or "auto" (XLA on accelerators).
        optimizer: "rmsprop" (the tutorial's) or "adam".
        epsilon: the optimiser's epsilon (Keras' default 1e-7).
        clipnorm: clip each weight's gradient to this norm (None: no clipping, as the tutorial).
        weight_decay: decoupled weight decay (AdamW-style: each step shrinks every trainable
            weight by learning_rate * weight_decay); 0: none, as the tutorial.
    Returns:
        The same model, compiled, reporting loss and modal-answer accuracy (soft: top-answer credit).
    """
    soft = loss == "soft"
    model.compile(
        optimizer=OPTIMIZERS[optimizer](learning_rate=learning_rate, epsilon=epsilon, clipnorm=clipnorm,
                                        weight_decay=weight_decay or None),
        loss={"answer": soft_binary_crossentropy if soft else keras.losses.SparseCategoricalCrossentropy()},
        metrics={"answer": [SoftAccuracy() if soft else keras.metrics.SparseCategoricalAccuracy(name="accuracy")]},
        jit_compile=jit_compile,
    )
    return model
