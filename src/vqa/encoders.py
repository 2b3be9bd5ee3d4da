"""The Predictor's two input parts: images -> VGG16 features, questions -> token ids.

:class:`ImageEncoder` decodes images and runs the model's VGG16 (fc7 vectors or a
block5_pool grid, as ``config.json`` says); :class:`QuestionEncoder` tokenises with
spaCy exactly as ``vqa prepare`` did and maps tokens to the model's vocabulary ids.
:class:`vqa.predict.Predictor` assembles them with :class:`vqa.answerer.Answerer`.

Each part guards the one library it shares between threads with its own lock:
VGG16 (Keras models build state lazily) and spaCy's tokenizer (a shared string
store). Decoding runs outside any lock, so a threaded server decodes in parallel.

Nothing here imports TensorFlow or spaCy until a part is built or first used.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vqa import artifacts
from vqa.config import FEATURES_BATCH_SIZE
from vqa.batching import Batcher, FeatureCache
from vqa.errors import InputError, VQAError


class ImageEncoder:
    """Images (paths or encoded bytes) -> float32 VGG16 features of the model's layout.

    Args:
        cnn_weights: ``"imagenet"``, a VGG16 ``.h5`` path, ``"random"``, or None for no CNN
            (callers that pass precomputed features).
        layout: ``"vector"`` (fc2 at 224 pixels) or ``"grid"`` (block5_pool at ``image_size``).
        image_size: side of the square the images are resized to.
        image_shape: shape of one image's features: (4096,) or (S, S, 512).
        max_batch_size: most images per VGG16 call when single requests are batched (1: no batching).
        batch_timeout_s: longest wait for such a batch to fill.
        cache_bytes: size of the feature cache (0: off).
    """

    def __init__(self, cnn_weights: str | None, *, layout: str, image_size: int, image_shape: tuple[int, ...],
                 max_batch_size: int = 1, batch_timeout_s: float = 0.0, cache_bytes: int = 0):
        self.cnn_weights = None if cnn_weights is None else str(cnn_weights)
        self.layout = layout
        self.image_size = image_size
        self.image_shape = tuple(image_shape)
        self._cnn = None
        if cnn_weights is not None:
            from vqa.features import load_cnn

            self._cnn = load_cnn(self.cnn_weights, layout=layout, image_size=image_size)
        self._lock = threading.Lock()
        self.batcher = Batcher(self._run_rows, max_batch_size=max_batch_size, timeout_s=batch_timeout_s,
                               stage="image")
        self.cache = FeatureCache(cache_bytes)
        self._warm = False

    def fits(self, *, cnn_weights: str | None, layout: str, image_size: int, image_shape: tuple[int, ...]) -> bool:
        """Whether this encoder gives the features a model with these settings needs (so it can be shared)."""
        return (self.cnn_weights == (None if cnn_weights is None else str(cnn_weights)) and self.layout == layout
                and self.image_size == image_size and self.image_shape == tuple(image_shape))

    def close(self) -> None:
        """Let the VGG16 batcher's thread end (see :meth:`vqa.batching.Batcher.close`)."""
        self.batcher.close()

    def layout_name(self) -> str:
        """The features in words, for error messages."""
        if self.layout == artifacts.LAYOUT_GRID:
            return f"a {self.image_shape[0]}x{self.image_shape[1]} grid of VGG16 block5_pool features"
        return "VGG16 fc7 vectors"

    def decode(self, image: Path | str | bytes) -> np.ndarray:
        """float32 (size, size, 3) RGB pixels of one image path or encoded image; InputError if unreadable."""
        from vqa.features import load_image

        return load_image(Path(image) if isinstance(image, str) else image, size=self.image_size)

    def run_cnn(self, pixels: np.ndarray) -> np.ndarray:
        """VGG16 on decoded pixels float32 (N, size, size, 3) -> float32 (N, *image_shape)."""
        from vqa.features import preprocess_images

        self._require_cnn()
        batch = preprocess_images(pixels)
        with self._lock:
            return call_model(self._cnn, batch)

    def features(self, images: Sequence[Path | str | bytes], *, batch_size: int = FEATURES_BATCH_SIZE,
                 progress: bool = False) -> np.ndarray:
        """Decode images and compute their features, one batch in memory at a time.

        Args:
            images: N image paths or encoded image bytes (JPEG/PNG).
            batch_size: images per VGG16 call.
            progress: show a tqdm progress bar.
        Returns:
            float32 (N, *image_shape).
        Raises:
            InputError: an image is unreadable, truncated or too large; batch_size below 1.
            VQAError: the encoder has no CNN.
        """
        from tqdm import tqdm

        self._require_cnn()
        if batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {batch_size}")
        rows = []
        for start in tqdm(range(0, len(images), batch_size), desc="VGG16", unit="batch",
                          disable=not progress, leave=False):
            pixels = np.stack([self.decode(image) for image in images[start:start + batch_size]])
            rows.append(self.run_cnn(pixels))
        return np.concatenate(rows) if rows else np.zeros((0, *self.image_shape), np.float32)

    def encode_one(self, image: Path | str | bytes, *, timing: dict | None = None,
                   deadline: float | None = None) -> np.ndarray:
        """One image's features through the cache, else decoded here and run in a shared VGG16 batch.

        Args:
            image: an image path or encoded bytes.
            timing: a dict to fill with ``cache`` ("hit", "miss" or "off") and, on a miss, the seconds
                of ``decode``, ``image_queue`` and ``vgg16``, and ``image_batch`` (the batch's size).
            deadline: when to stop waiting for the VGG16 batch (``time.perf_counter()``; None: never).
        Returns:
            float32 ``image_shape`` (read-only when it came from, or went to, the cache).
        Raises:
            InputError: the image is unreadable (refused before it joins a batch).
            DeadlineExceeded: the deadline passed while it waited (``Batcher.submit``).
        """
        timing = {} if timing is None else timing
        key = self._cache_key(image)
        cached = None if key is None else self.cache.get(key)
        timing["cache"] = "off" if key is None else ("hit" if cached is not None else "miss")
        if cached is not None:
            return cached
        self._require_cnn()
        with self.batcher.expecting() as arrival:
            start = time.perf_counter()
            pixels = self.decode(image)
            timing["decode"] = time.perf_counter() - start
            features, batch = self.batcher.submit(pixels, arrival=arrival, deadline=deadline)
        timing.update(image_queue=batch["queue"], vgg16=batch["run"], image_batch=batch["batch_size"])
        if key is not None:
            self.cache.put(key, features)
        return features

    def cached_features(self, images: Sequence[Path | str | bytes], *, batch_size: int = FEATURES_BATCH_SIZE) -> np.ndarray:
        """:meth:`features` of many images, through the cache: only the images it lacks go through VGG16."""
        keys = [self._cache_key(image) for image in images]
        found = [None if key is None else self.cache.get(key) for key in keys]
        missing = [i for i, row in enumerate(found) if row is None]
        computed = self.features([images[i] for i in missing], batch_size=batch_size) if missing else []
        for i, row in zip(missing, computed):
            found[i] = row
            if keys[i] is not None:
                self.cache.put(keys[i], row)
        return np.stack(found) if found else np.zeros((0, *self.image_shape), np.float32)

    def _cache_key(self, image: Path | str | bytes) -> bytes | None:
        """SHA-256 of the image's bytes, or None when the cache is off or the file cannot be read."""
        if not self.cache.enabled:
            return None
        if isinstance(image, bytes):
            return self.cache.key(image)
        try:
            return self.cache.key(Path(image).read_bytes())
        except OSError:
            return None  # decode() names the problem

    def _run_rows(self, pixels: list[np.ndarray]) -> list[np.ndarray]:
        """The batcher's call: decoded images -> one features row each."""
        return list(self.run_cnn(np.stack(pixels)))

    def check_features(self, features: np.ndarray) -> None:
        """InputError unless ``features`` has one image's shape."""
        if features.shape != self.image_shape:
            raise InputError(f"image features must have shape {self.image_shape} "
                             f"({self.layout_name()}), got {features.shape}")

    def warm_up(self) -> None:
        """One VGG16 call on a grey image, so the first request does not pay for lazy set-up (once)."""
        if self._cnn is not None and not self._warm:
            self.run_cnn(np.full((1, self.image_size, self.image_size, 3), 128, dtype=np.float32))
        self._warm = True

    def _require_cnn(self) -> None:
        if self._cnn is None:
            raise VQAError("this Predictor has no CNN (cnn_weights=None); pass precomputed image features "
                           "or build it with cnn_weights='imagenet', a VGG16 .h5 path or 'random'")


class QuestionEncoder:
    """Question strings -> int32 token ids, as ``vqa prepare`` encoded the training questions.

    Args:
        words: the model's vocabulary (token id = position), kept as ``words``.
        max_question_length: ids kept per question; longer questions are truncated.
        spacy_model: spaCy model name or folder (None: the same search as ``vqa prepare``),
            loaded on the first question.
        trained_with: the spaCy label the vocabulary was built with (``config.json``), for a warning.
        source: what to name in that warning (the model directory).
    """

    def __init__(self, words: Sequence[str], *, max_question_length: int, spacy_model: str | Path | None = None,
                 trained_with: str | None = None, source: Path | str = "the model"):
        from vqa import text

        self.words = list(words)
        self.word_index = text.word_index_of(self.words)
        self.max_question_length = max_question_length
        self._spacy_model = spacy_model
        self._trained_with = trained_with
        self._source = source
        self._nlp = None
        self._lock = threading.Lock()

    def encode(self, questions: Sequence[str]) -> np.ndarray:
        """Tokenise questions and map them to token ids.

        Args:
            questions: N question strings.
        Returns:
            int32 (N, max_question_length): ids right-padded with 0, unknown words = OOV id,
            longer questions truncated.
        """
        from vqa import text

        with self._lock:
            tokens = text.tokenize(self._tokenizer(), list(questions))
        return text.encode(tokens, self.word_index, max_question_length=self.max_question_length)[0]

    def _tokenizer(self):
        """spaCy, loaded on first use; the caller holds ``_lock``."""
        if self._nlp is None:
            from vqa import text

            nlp = text.load_spacy(self._spacy_model)
            self._check_label(text.spacy_model_label(nlp))
            self._nlp = nlp
        return self._nlp

    def _check_label(self, label: str) -> None:
        """Warn when the word-vector model differs from the one the vocabulary was built with."""
        if self._trained_with and self._trained_with != label:
            warnings.warn(f"{self._source} was prepared with {self._trained_with} but {label} is loaded; "
                          "tokenisation may differ slightly", UserWarning, stacklevel=5)


def check_questions(questions: Sequence[str]) -> None:
    """InputError when a question is not a non-blank string."""
    for question in questions:
        if not isinstance(question, str) or not question.strip():
            raise InputError("a question is empty; ask something about the image")


def call_model(model, inputs):
    """Run a Keras model eagerly on one batch: float32 numpy output(s).

    A direct call, unlike ``predict_on_batch``, builds no traced function, so
    batches of varying size (the last one, single requests) never retrace.
    """
    import keras

    outputs = model(inputs, training=False)
    if isinstance(outputs, dict):
        return {name: np.asarray(keras.ops.convert_to_numpy(value), dtype=np.float32)
                for name, value in outputs.items()}
    return np.asarray(keras.ops.convert_to_numpy(outputs), dtype=np.float32)
