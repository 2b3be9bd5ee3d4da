"""Prepared arrays + image features -> training batches (a ``keras.utils.PyDataset``).

The files are read by their owners: ``vqa_data.h5`` by `vqa.prepared`
(`load_prepared`, the `Split` arrays) and the features file by
`vqa.feature_file` (`FeaturesFile`, `load_features`). This module joins them.

The tutorial ran spaCy on every question of every batch and gathered image rows
in a Python loop. Here the questions are token ids computed once by ``vqa
prepare``; a batch is two NumPy fancy-indexing gathers: token ids, and image
feature rows by a question -> row map built once with ``searchsorted``. The
(questions x 4096) matrix is never materialised. Every input feed lives here, and
`training_feed` is the one choice among them (one device, a worker's shard,
JAX's trimmed batches).

Features come in two layouts: fc7 vectors float32 (M, 4096) and block5_pool
grids float16 (M, S, S, 512). A grid file is kept in float16 on disk and in
memory (half the bytes: COCO at 448 is ~25 GB); batches are cast to float32
when they are gathered.
"""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np

from vqa.cluster import WorkerRole
from vqa.errors import InputError
from vqa.prepared import AnswerScores, Split


def feature_rows(question_image_ids: np.ndarray, feature_image_ids: np.ndarray, *, source: Path | str = "features") -> np.ndarray:
    """Map each question's image id to its row in the features matrix, once.

    Args:
        question_image_ids: int64 (N,) image id per question.
        feature_image_ids: int64 (M,) image id per feature row.
        source: the features file, named in the error.
    Returns:
        int64 (N,) row indices into the features matrix.
    Raises:
        InputError: some questions' images have no feature row.
    """
    order = np.argsort(feature_image_ids, kind="stable")
    sorted_ids = feature_image_ids[order]
    pos = np.clip(np.searchsorted(sorted_ids, question_image_ids), 0, max(len(sorted_ids) - 1, 0))
    found = sorted_ids[pos] == question_image_ids if len(sorted_ids) else np.zeros(len(question_image_ids), bool)
    if not found.all():
        missing = np.unique(question_image_ids[~found])
        raise InputError(f"{source}: no features for {len(missing)} image ids (e.g. {missing[0]}); "
                         "run 'vqa features' on the images of these questions")
    return order[pos].astype(np.int64)


def _moments(blocks, dim: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean and (unfloored) variance per column, float64 (dim,) each, over row blocks, and the row count."""
    total, squares, count = np.zeros(dim, np.float64), np.zeros(dim, np.float64), 0
    for block in blocks:
        total += block.sum(axis=0)
        squares += np.square(block).sum(axis=0)
        count += len(block)
    mean = total / max(count, 1)
    return mean, np.maximum(squares / max(count, 1) - np.square(mean), 0.0), count


def image_statistics(features: np.ndarray, rows: np.ndarray, *, chunk_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature (vectors) or per-channel (grids) mean and variance over the distinct images ``rows`` point at.

    A grid's statistics pool all S*S regions of those images: one mean and variance per
    channel, as a per-channel standardisation of the regions needs. The images are read
    in blocks of about ``chunk_size`` vectors (a grid image counts S*S).

    Each variance is floored at (1% of the mean standard deviation)^2, so that a feature
    that never fired in training cannot explode when a new image turns it on.

    Args:
        features: float32 (M, D) vectors, or float16/float32 (M, S, S, C) grids (may be
            memory-mapped, or a :class:`ChunkedFeatures`).
        rows: int64 (N,) feature rows of the training questions.
    Returns:
        (mean, variance), float32 (D,) or (C,) each.
    """
    unique = np.unique(rows)
    dim = features.shape[-1]
    step = max(1, chunk_size // int(np.prod(features.shape[1:-1], dtype=np.int64)))
    blocks = (np.asarray(features[unique[start:start + step]], dtype=np.float64).reshape(-1, dim)
              for start in range(0, len(unique), step))
    mean, variance, _ = _moments(blocks, dim)
    floor = (0.01 * np.sqrt(variance).mean()) ** 2
    return mean.astype(np.float32), np.maximum(variance, max(floor, 1e-12)).astype(np.float32)


def question_statistics(embeddings: np.ndarray, token_ids: np.ndarray, *, chunk_size: int = 8192):
    """Per-dimension mean and variance of the training questions' summed word vectors.

    Args:
        embeddings: float32 (V, 300) word vectors (row 0 = padding, zero).
        token_ids: int32 (N, T) training questions.
    Returns:
        (mean, variance), float32 (300,) each; variances floored at 1e-6.
    """
    blocks = (embeddings[token_ids[start:start + chunk_size]].sum(axis=1, dtype=np.float64)
              for start in range(0, len(token_ids), chunk_size))
    mean, variance, _ = _moments(blocks, embeddings.shape[1])
    return mean.astype(np.float32), np.maximum(variance, 1e-6).astype(np.float32)


def dense_targets(scores: AnswerScores, idx: np.ndarray, num_answers: int) -> np.ndarray:
    """float32 (len(idx), num_answers): the soft targets of questions ``idx`` (one scatter of their sparse scores)."""
    classes, values = scores.classes[idx], scores.scores[idx]
    targets = np.zeros((len(idx), num_answers), np.float32)
    row, column = np.nonzero(classes >= 0)
    targets[row, classes[row, column]] = values[row, column]
    return targets


class QuestionBatches(keras.utils.PyDataset):
    """Batches of {"question", "image_features"} (+ labels), reshuffled every epoch.

    With ``bucket=True`` (the LSTM), questions of similar length share a batch and each
    batch is padded only to its longest question, so the LSTM runs fewer steps.
    Otherwise every batch keeps the full ``max_question_length`` columns.

    With ``shard=(r, N)`` (multi-worker training) batch i is worker r's r-th of N slices of the
    global batch i that every worker draws alike (same ``seed``): ``batch_size`` stays the global
    batch, the number of batches is unchanged, and the N workers read each example once per epoch.

    With ``num_answers`` (``--loss soft``) the targets are the split's soft scores, loaded once
    (sparse, `vqa.prepared.AnswerScores`) and scattered into a dense (B, num_answers) row block
    per batch.

    Yields:
        ({"question": int32 (B, T), "image_features": float32 (B, D) or (B, S, S, 512)},
        {"answer": int32 (B,)} or, with ``num_answers``, {"answer": float32 (B, num_answers)})
        or only the inputs when ``labels`` is None; float16 grid features are cast to float32
        here, batch by batch.
    """

    def __init__(self, split: Split, features: np.ndarray, rows: np.ndarray, *, batch_size: int,
                 shuffle: bool = True, bucket: bool = False, seed: int | None = None,
                 shard: tuple[int, int] = (0, 1), num_answers: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if len(split.token_ids) == 0:
            raise InputError(f"split {split.name!r} has no questions to batch")
        if num_answers is not None and split.scores is None:
            raise InputError(f"split {split.name!r} has no soft targets; load it with its answer scores")
        self.num_answers = num_answers
        if min(len(split.token_ids), batch_size) < shard[1]:
            raise InputError(f"split {split.name!r}: batch size {batch_size} and {len(split.token_ids)} questions "
                             f"for {shard[1]} workers; each needs at least one per batch")
        self.shard = shard
        self.split, self.features, self.rows = split, features, rows
        self.batch_size, self.shuffle, self.bucket = batch_size, shuffle, bucket
        self.rng = np.random.default_rng(seed)
        self.batches = self._make_batches()
        self._served: set[int] = set()  # batch indices read since the last shuffle

    def _make_batches(self) -> list[np.ndarray]:
        """Question indices per batch for one epoch."""
        n = len(self.split.token_ids)
        order = self.rng.permutation(n) if self.shuffle else np.arange(n)
        if self.bucket:
            # Sort by length inside pools of 50 batches: short padding, still random batches.
            pool = 50 * self.batch_size
            order = np.concatenate([chunk[np.argsort(self.split.lengths[chunk], kind="stable")]
                                    for chunk in np.split(order, range(pool, n, pool))])
        batches = np.split(order, range(self.batch_size, n, self.batch_size))
        if len(batches) > 1 and len(batches[-1]) < self.shard[1]:
            batches[-2:] = [np.concatenate(batches[-2:])]  # so that every worker gets at least one question
        if self.bucket:
            if self.shuffle:
                batches = [batches[i] for i in self.rng.permutation(len(batches))]
            batches = self._longest_then_shortest_first(batches)
        return batches

    def _longest_then_shortest_first(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        """Move the widest batch first and the narrowest second.

        Keras infers the input signature from the first two batches, so they must differ in
        width for T to stay variable; the widest first also shows memory limits at step one.
        """
        widths = [int(self.split.lengths[b].max()) for b in batches]
        first, second = int(np.argmax(widths)), int(np.argmin(widths))
        if first == second:
            return batches
        rest = [b for i, b in enumerate(batches) if i not in (first, second)]
        return [batches[first], batches[second]] + rest

    def __len__(self) -> int:
        return len(self.batches)

    def indices(self, index: int) -> tuple[np.ndarray, int]:
        """(this worker's question indices in batch ``index``, the global batch's longest question)."""
        self._served.add(index)
        idx = self.batches[index]
        width = max(int(self.split.lengths[idx].max()), 1)  # the global batch's: all workers agree on T
        idx = np.array_split(idx, self.shard[1])[self.shard[0]]
        if self.shuffle:
            idx = idx[np.argsort(self.rows[idx], kind="stable")]  # read feature rows in file order
        return idx, width

    def __getitem__(self, index: int):
        idx, width = self.indices(index)
        tokens = self.split.token_ids[idx]
        if self.bucket:
            tokens = tokens[:, :width]
        inputs = {"question": tokens, "image_features": np.asarray(self.features[self.rows[idx]], dtype=np.float32)}
        if self.split.labels is None:
            return (inputs,)
        if self.num_answers is not None:
            return inputs, {"answer": dense_targets(self.split.scores, idx, self.num_answers)}
        return inputs, {"answer": self.split.labels[idx]}

    def on_epoch_end(self) -> None:
        """A new order once every batch has been read: not after Keras' look at the first two
        batches (it calls this right after), so epoch 1 is the same whichever way ``fit`` is fed."""
        if self.shuffle and len(self._served) >= len(self.batches):
            self.batches = self._make_batches()
            self._served = set()


# Features up to this size are copied into TensorFlow for ``in_graph_batches`` (the copy is extra memory).
IN_GRAPH_BYTES = 1 << 30


def in_graph_batches(batches: QuestionBatches, *, max_bytes: int = IN_GRAPH_BYTES):
    """``batches`` as a ``tf.data.Dataset`` that gathers every batch inside TensorFlow, or None.

    The same batches in the same order as ``batches`` (a new shuffle on each pass), but only
    each pass's question order comes from Python, once per pass: the token ids, labels (or the
    sparse soft scores, scattered into dense targets) and image features are held as tensors and
    gathered, trimmed and cast (float16 grids to float32) by TensorFlow ops, overlapped with the
    training step by ``prefetch``. This keeps a small model's step from waiting on the Python side
    of a ``PyDataset`` (docs/training.md, the input pipeline). None (use
    ``batches`` itself) unless the backend is TensorFlow, the features are an in-memory array of
    at most ``max_bytes`` and the batches have labels and are not a worker's shard.
    """
    if (keras.backend.backend() != "tensorflow" or batches.shard[1] != 1 or batches.split.labels is None
            or not isinstance(batches.features, np.ndarray) or batches.features.nbytes > max_bytes):
        return None
    import tensorflow as tf

    split = batches.split
    tokens, lengths = tf.constant(split.token_ids), tf.constant(split.lengths.astype(np.int32))
    labels, rows = tf.constant(split.labels), tf.constant(batches.rows.astype(np.int64))
    if batches.num_answers is not None:
        classes, scores = tf.constant(split.scores.classes), tf.constant(split.scores.scores)
    features = tf.Variable(np.asarray(batches.features), trainable=False)  # a variable: no 2 GB graph limit
    passes = [0]

    def epoch():
        """One pass's batches as one (batches, widest) index matrix padded with -1, and each batch's size."""
        if passes[0]:
            batches.on_epoch_end()  # a new order for every pass after the first, as fit does for a PyDataset
        passes[0] += 1
        order = [batches.indices(index)[0] for index in range(len(batches))]
        sizes = np.array([len(i) for i in order], np.int32)
        matrix = np.full((len(order), sizes.max(initial=0)), -1, np.int64)
        for row, i in enumerate(order):
            matrix[row, :len(i)] = i
        yield matrix, sizes

    def gather(row, size):
        idx = row[:size]
        question = tf.gather(tokens, idx)
        if batches.bucket:
            question = question[:, :tf.maximum(tf.reduce_max(tf.gather(lengths, idx)), 1)]
        image = tf.cast(tf.gather(features, tf.gather(rows, idx)), tf.float32)
        if batches.num_answers is None:
            answer = tf.gather(labels, idx)
        else:  # the sparse scores scattered into (B, K), as dense_targets does; class -1 pads
            batch_classes = tf.gather(classes, idx)
            given = tf.where(batch_classes >= 0)  # (n, 2): (row, position) of each real class
            answer = tf.scatter_nd(tf.stack([given[:, 0], tf.cast(tf.gather_nd(batch_classes, given), tf.int64)], 1),
                                   tf.gather_nd(tf.gather(scores, idx), given),
                                   tf.cast(tf.stack([tf.size(idx), batches.num_answers]), tf.int64))
        return {"question": question, "image_features": image}, {"answer": answer}

    # Python runs once per pass, not once per batch: the pass's indices are sliced inside TensorFlow.
    dataset = tf.data.Dataset.from_generator(epoch, output_signature=(tf.TensorSpec((None, None), tf.int64),
                                                                      tf.TensorSpec((None,), tf.int32)))
    dataset = dataset.flat_map(lambda matrix, sizes: tf.data.Dataset.from_tensor_slices((matrix, sizes)))
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(len(batches)))
    return dataset.map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


# --------------------------------------------------------------------------- what fit reads
# Four feeds, one choice (``training_feed``): the QuestionBatches PyDataset, its in-graph copy,
# a worker's shard as a distributed tf.data input (``_Pass``), and batches trimmed for a JAX
# mesh (``_Trimmed``). The last two work around private Keras behaviour; ``feed_callbacks``
# reports what each worker read.

logger = logging.getLogger(__name__)


class _Pass:
    """A generator factory over a PyDataset for tf.data: one call = one epoch; counts the examples read."""

    def __init__(self, batches: keras.utils.PyDataset):
        self.batches, self.passes, self.examples_read = batches, 0, 0

    def __call__(self):
        if self.passes:
            self.batches.on_epoch_end()
        self.passes, self.examples_read = self.passes + 1, 0
        for index in range(len(self.batches)):
            batch = self.batches[index]
            self.examples_read += len(next(iter(batch[0].values())))
            yield batch


def _signature(batches: keras.utils.PyDataset):
    """tf.TensorSpec per array of a batch: the batch axis, and any axis that differs between batches 0 and 1, as None."""
    import tensorflow as tf

    first, second = batches[0], batches[min(1, len(batches) - 1)]

    def spec(a, b):
        shape = tuple(None if axis == 0 or a.shape[axis] != b.shape[axis] else a.shape[axis] for axis in range(a.ndim))
        return tf.TensorSpec(shape, tf.as_dtype(a.dtype))

    return keras.tree.map_structure(spec, first, second)


class _Trimmed(keras.utils.PyDataset):
    """QuestionBatches with each batch cut to a multiple of ``multiple`` examples (a JAX mesh splits evenly only).

    A batch smaller than ``multiple`` (the epoch's last, at most) is skipped.
    """

    def __init__(self, batches, multiple: int):
        super().__init__()
        self.batches, self.multiple = batches, multiple
        self.kept = [i for i, rows in enumerate(batches.batches) if len(rows) >= multiple]

    def __len__(self) -> int:
        return len(self.kept)

    def __getitem__(self, index: int):
        batch = self.batches[self.kept[index]]
        keep = len(next(iter(batch[0].values()))) // self.multiple * self.multiple
        return keras.tree.map_structure(lambda array: array[:keep], batch)

    def on_epoch_end(self) -> None:
        self.batches.on_epoch_end()
        self.kept = [i for i, rows in enumerate(self.batches.batches) if len(rows) >= self.multiple]


def training_feed(strategy, role: WorkerRole, batches: QuestionBatches):
    """What ``fit`` trains on: the one place where the input feed is chosen, one of four.

    - ``data-parallel`` (JAX): ``_Trimmed`` batches, through ``feed``: a device mesh splits a batch evenly only;
    - ``multiworker`` over several workers: this worker's shard as a distributed tf.data input
      (``_Pass``), through ``feed``: handed to its replica as is, not re-batched nor auto-sharded;
    - no strategy, TensorFlow, labelled features in memory: ``in_graph_batches``, so that a small
      model's step does not wait on Python to gather its batch;
    - otherwise (``mirrored``, a one-worker cluster, memory-mapped or chunked features, another
      backend): the ``QuestionBatches`` PyDataset itself.

    ``feed_callbacks(role, feed, ...)`` gives the callbacks the chosen feed needs.
    """
    if strategy is not None:
        return feed(strategy, role, batches)
    in_graph = in_graph_batches(batches)
    return batches if in_graph is None else in_graph


def feed(strategy, role: WorkerRole, batches: keras.utils.PyDataset | None):
    """What ``fit`` reads: ``batches``, or for a cluster this worker's share as a distributed tf.data input.

    ``batches`` must already be sharded for ``role`` (``QuestionBatches(shard=role.shard)``): the
    dataset is handed to each worker's replica as is (no re-batching, no auto-sharding). Under
    data-parallel the last batch of an epoch loses its last (batch size mod devices) examples.
    """
    if batches is None or strategy is None:
        return batches
    if isinstance(strategy, keras.distribution.DataParallel):
        devices = len(strategy.device_mesh.devices.flatten())
        if batches.batch_size % devices:
            raise InputError(f"--distribute data-parallel: --batch-size {batches.batch_size} must be a multiple "
                             f"of the {devices} devices")
        return _Trimmed(batches, devices)
    if role.num_workers == 1:
        return batches
    import tensorflow as tf

    reader = _Pass(batches)
    dataset = tf.data.Dataset.from_generator(reader, output_signature=_signature(batches))
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(len(batches))).prefetch(2)
    distributed = strategy.distribute_datasets_from_function(lambda context: dataset)
    distributed.vqa_reader = reader  # for ReadReport
    return distributed


class ReadReport(keras.callbacks.Callback):
    """Log, after every epoch, how many training examples this worker read (one line per worker)."""

    def __init__(self, reader: _Pass, role: WorkerRole, total: int):
        super().__init__()
        self.reader, self.role, self.total = reader, role, total

    def on_epoch_end(self, epoch, logs=None):
        logger.info("%s: epoch %d: read %d of %d train examples in %d steps", self.role.name, epoch + 1,
                    self.reader.examples_read, self.total, len(self.reader.batches))


def feed_callbacks(role: WorkerRole, train_feed, total: int) -> list:
    """The callbacks that ``train_feed`` (from ``training_feed``) needs: a cluster's read report, else none."""
    reader = getattr(train_feed, "vqa_reader", None)
    return [] if reader is None else [ReadReport(reader, role, total)]
