"""Inference: a model directory, spaCy and VGG16 loaded once -> top-k answers.

The tutorial's ``test.py`` rebuilt VGG16, reloaded spaCy and the model for every
question. A :class:`Predictor` loads them once and then answers (image, question)
pairs, one or many at a time, with the training pipeline's exact inputs: the
same spaCy tokenizer, vocabulary (token id = position in ``vocabulary.json``),
OOV rule and maximum question length, and fc2 features from the same VGG16
preprocessing. Image and question normalisation live inside the saved model.

``vqa ask``, ``vqa evaluate --model`` and the Flask app in ``serving/`` all use it.

Which image features: ``config.json`` says the model's ``image_layout`` ("vector": VGG16
fc7 at 224 pixels, the MLP and the LSTM; "grid": ``block5_pool`` at ``image_size``, the
SAN) and the Predictor builds that CNN for new images. A SAN also returns its attention
over the S x S regions (:meth:`Predictor.ask_with_attention`).

Which weights answer: a model directory holds ``model.keras`` (the last epoch's
weights) and ``best.keras`` (the epoch with the lowest validation loss).
``checkpoint="last"`` (the default of ``vqa ask``, ``vqa evaluate --model``,
``vqa serve`` and the server's ``VQA_CHECKPOINT``) loads the former,
``checkpoint="best"`` the latter.

spaCy loads lazily, on the first question that must be tokenised: callers that
pass prepared token ids (``vqa evaluate --model`` on data prepared with the
model's own vocabulary) never pay for it.

Thread safety: one Predictor may be shared by many threads (a threaded web
server). Image decoding runs concurrently; spaCy's tokenizer and every Keras
call (VGG16 and the VQA model) run under locks, one call at a time. TensorFlow
already spreads one call over all cores, so serialising loses little, and it
keeps the models' lazily built state and spaCy's shared string store free of
races. Models are called eagerly, so a batch of any size never re-traces.

This module imports neither TensorFlow nor spaCy until a Predictor is built
(:func:`check_model_dir` imports neither at all).
"""

from __future__ import annotations

import re
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vqa import __version__, artifacts, modeldir
from vqa.modeldir import check_model_dir  # noqa: F401  (part of this module's API)
from vqa.errors import InputError, VQAError

DEFAULT_TOP = 5
CHECKPOINTS = tuple(modeldir.CHECKPOINTS)
_AUXILIARIES = {"is", "are", "was", "were", "do", "does", "did", "can", "could", "will", "would", "should",
                "has", "have", "had", "in", "on", "at", "of", "there"}
_NUMBER_WORDS = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"}
_COLOR_QUESTION = re.compile(r"^what\s+colou?rs?\s+(is|are|was|were)\s+(.+)$", re.IGNORECASE)
_COUNT_QUESTION = re.compile(r"^how\s+many\s+(.+)$", re.IGNORECASE)


class Predictor:
    """A trained VQA model, its vocabulary and (optionally) VGG16, ready to answer questions.

    Args:
        model_dir: a model directory written by ``vqa train``.
        cnn_weights: VGG16 weights for new images: ``"imagenet"``, a local VGG16 ``.h5``,
            ``"random"`` (tests/demos), or None for no CNN (callers with precomputed
            fc7 features, such as the evaluation). Use the weights the training features
            were computed with.
        checkpoint: ``"last"`` loads ``model.keras`` (the last epoch's weights),
            ``"best"`` loads ``best.keras`` (the epoch with the lowest validation loss).
        spacy_model: spaCy model name or folder (default: the same search as ``vqa prepare``);
            loaded on the first question that must be tokenised.
    Raises:
        InputError: not a finished model directory, or an unknown/missing checkpoint.
    """

    def __init__(self, model_dir: Path, *, cnn_weights: str | None = "imagenet", checkpoint: str = "last",
                 spacy_model: str | Path | None = None):
        from vqa import text
        from vqa.runtime import quiet_tensorflow

        check_model_dir(model_dir, checkpoint=checkpoint)
        quiet_tensorflow()  # before Keras is imported: a server's log stays clean

        self.model_dir = Path(model_dir)
        self.checkpoint = checkpoint
        loaded = modeldir.load_model_dir(self.model_dir, checkpoint=checkpoint)
        self.model, self.config, self.words, self.answers = loaded.model, loaded.config, loaded.words, loaded.answers
        self.word_index = text.word_index_of(self.words)
        self.max_question_length = int(self.config.get("max_question_length", artifacts.MAX_QUESTION_LENGTH))
        self.image_layout = str(self.config.get("image_layout", artifacts.LAYOUT_VECTOR))
        self.image_size = int(self.config.get("image_size", artifacts.FC7_IMAGE_SIZE))
        self.image_shape = tuple(int(n) for n in self.config.get(
            "image_feature_shape", [self.config.get("image_feature_dim", artifacts.IMAGE_FEATURE_DIM)]))
        self.cnn_weights = None if cnn_weights is None else str(cnn_weights)
        self._spacy_model = spacy_model
        self._nlp = None
        self._cnn = None
        if cnn_weights is not None:
            from vqa.features import load_cnn

            self._cnn = load_cnn(str(cnn_weights), layout=self.image_layout, image_size=self.image_size)
        self._keras_lock = threading.Lock()
        self._spacy_lock = threading.Lock()

    @property
    def has_attention(self) -> bool:
        """Whether the model outputs attention maps (the SAN)."""
        return isinstance(self.model.output, dict) and "attention" in self.model.output

    @property
    def grid_size(self) -> int | None:
        """S, the side of the attention grid (None for fc7 models)."""
        return self.image_shape[0] if self.image_layout == artifacts.LAYOUT_GRID else None

    def _tokenizer(self):
        """spaCy, loaded on first use; the caller holds ``_spacy_lock``."""
        if self._nlp is None:
            from vqa import text

            nlp = text.load_spacy(self._spacy_model)
            self._check_spacy_label(text.spacy_model_label(nlp))
            self._nlp = nlp
        return self._nlp

    def _check_spacy_label(self, label: str) -> None:
        """Warn when the word-vector model differs from the one the vocabulary was built with."""
        trained = self.config.get("spacy_model")
        if trained and trained != label:
            warnings.warn(f"{self.model_dir} was prepared with {trained} but {label} is loaded; "
                          "tokenisation may differ slightly", UserWarning, stacklevel=4)

    # ----------------------------------------------------------------------- inputs
    def encode_questions(self, questions: Sequence[str]) -> np.ndarray:
        """Tokenise questions exactly as ``vqa prepare`` did and map them to token ids.

        Args:
            questions: N question strings.
        Returns:
            int32 (N, max_question_length): ids right-padded with 0, unknown words = OOV id,
            longer questions truncated.
        """
        from vqa import text

        with self._spacy_lock:
            tokens = text.tokenize(self._tokenizer(), list(questions))
        return text.encode(tokens, self.word_index, max_question_length=self.max_question_length)[0]

    def image_features(self, images: Sequence[Path | bytes], *, batch_size: int = 32,
                       progress: bool = False) -> np.ndarray:
        """Decode images and compute the model's VGG16 features, one batch in memory at a time.

        Args:
            images: N image paths or encoded image bytes (JPEG/PNG).
            batch_size: images per VGG16 call.
            progress: show a tqdm progress bar.
        Returns:
            float32 (N, *image_shape): (N, 4096) fc2 (fc7) vectors, or (N, S, S, 512) grids.
        Raises:
            InputError: an image is unreadable, truncated or too large.
            VQAError: the Predictor was built with ``cnn_weights=None``.
        """
        from tqdm import tqdm

        from vqa.features import load_image, preprocess_images

        if self._cnn is None:
            raise VQAError("this Predictor has no CNN (cnn_weights=None); pass precomputed image features "
                           "or build it with cnn_weights='imagenet', a VGG16 .h5 path or 'random'")
        if batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {batch_size}")
        rows = []
        for start in tqdm(range(0, len(images), batch_size), desc="VGG16", unit="batch",
                          disable=not progress, leave=False):
            pixels = [load_image(Path(image) if isinstance(image, str) else image, size=self.image_size)
                      for image in images[start:start + batch_size]]
            batch = preprocess_images(np.stack(pixels))
            with self._keras_lock:
                rows.append(_call(self._cnn, batch))
        return np.concatenate(rows) if rows else np.zeros((0, *self.image_shape), np.float32)

    # ----------------------------------------------------------------------- the model
    def predict_proba(self, token_ids: np.ndarray, image_features: np.ndarray, *, batch_size: int = 512,
                      progress: bool = False) -> np.ndarray:
        """Answer probabilities for encoded questions and their images' features.

        Args:
            token_ids: int32 (N, T) question token ids (``encode_questions`` or the prepared HDF5).
            image_features: float32 (N, *image_shape) features of each question's image: (N, 4096)
                fc7 vectors, or (N, S, S, 512) grids for a SAN.
            batch_size: questions per model call.
            progress: show a tqdm progress bar.
        Returns:
            float32 (N, K): softmax over the K answers; column i is ``answers[i]``.
        """
        return self.predict_outputs(token_ids, image_features, batch_size=batch_size, progress=progress)["answer"]

    def predict_outputs(self, token_ids: np.ndarray, image_features: np.ndarray, *, batch_size: int = 512,
                        progress: bool = False) -> dict[str, np.ndarray]:
        """Every output of the model: ``"answer"`` float32 (N, K) and, for a SAN, ``"attention"``
        float32 (N, L, S, S), each layer's attention over the grid (row-major; sums to 1).

        Args: as :meth:`predict_proba`.
        """
        from tqdm import tqdm

        token_ids, image_features = self._checked_inputs(token_ids, image_features)
        if batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {batch_size}")
        parts: dict[str, list[np.ndarray]] = {}
        starts = range(0, len(token_ids), batch_size)
        for start in tqdm(starts, desc="predict", unit="batch", disable=not progress, leave=False):
            stop = start + batch_size
            inputs = {"question": token_ids[start:stop], "image_features": image_features[start:stop]}
            with self._keras_lock:
                outputs = _call(self.model, inputs)
            for name, value in (outputs if isinstance(outputs, dict) else {"answer": outputs}).items():
                parts.setdefault(name, []).append(value)
        out = {name: np.concatenate(values) for name, values in parts.items()}
        out.setdefault("answer", np.zeros((0, len(self.answers)), np.float32))
        if "attention" in out and self.grid_size:
            out["attention"] = out["attention"].reshape(len(out["attention"]), -1, self.grid_size, self.grid_size)
        return out

    def _checked_inputs(self, token_ids, image_features) -> tuple[np.ndarray, np.ndarray]:
        """The two arrays as int32 / float32, or InputError describing the mismatch."""
        token_ids = np.asarray(token_ids)
        image_features = np.asarray(image_features, dtype=np.float32)
        if token_ids.ndim != 2 or not np.issubdtype(token_ids.dtype, np.integer):
            raise InputError(f"token ids must be an integer (N, T) array, got {token_ids.dtype} {token_ids.shape}")
        expected = (len(token_ids), *self.image_shape)
        if image_features.shape != expected:
            raise InputError(f"image features must be {expected} for {len(token_ids)} questions "
                             f"({self._layout_name()}), got {image_features.shape}")
        if token_ids.size and (token_ids.min() < 0 or token_ids.max() >= len(self.words)):
            raise InputError(f"token ids must be in [0, {len(self.words)}); encode the questions with this "
                             "model's vocabulary (re-run 'vqa prepare' with the same data)")
        return token_ids.astype(np.int32, copy=False), image_features

    def _layout_name(self) -> str:
        if self.image_layout == artifacts.LAYOUT_GRID:
            return f"a {self.image_shape[0]}x{self.image_shape[1]} grid of VGG16 block5_pool features"
        return "VGG16 fc7 vectors"

    # ----------------------------------------------------------------------- answers
    def top_answers(self, probabilities: np.ndarray, *, top: int = DEFAULT_TOP) -> list[list[tuple[str, float]]]:
        """The ``top`` most probable answers of each row, most probable first.

        Args:
            probabilities: float32 (N, K) from :meth:`predict_proba`.
            top: answers per row, 1..K.
        Returns:
            N lists of ``top`` (answer, probability) pairs.
        """
        probabilities = np.asarray(probabilities)
        self._check_top(top)
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top]
        return [[(self.answers[i], float(row[i])) for i in indices] for row, indices in zip(probabilities, order)]

    def best_answers(self, probabilities: np.ndarray) -> list[str]:
        """The most probable answer of each row (what a results file records).

        Args:
            probabilities: float32 (N, K) from :meth:`predict_proba`.
        Returns:
            N answer strings.
        """
        return [self.answers[i] for i in np.argmax(np.asarray(probabilities), axis=1)]

    def _check_top(self, top: int) -> None:
        if not isinstance(top, (int, np.integer)) or not 1 <= top <= len(self.answers):
            raise InputError(f"top must be an integer in 1..{len(self.answers)}, got {top!r}")

    # ----------------------------------------------------------------------- one call
    def ask(self, image: Path | bytes | np.ndarray, question: str, *,
            top: int = DEFAULT_TOP) -> list[tuple[str, float]]:
        """Answer one question about one image.

        Args:
            image: an image path, encoded image bytes, or its float32 features (``image_shape``).
            question: the question text.
            top: number of answers to return, 1..K.
        Returns:
            ``top`` (answer, probability) pairs, most probable first.
        """
        return self.ask_many([image], [question], top=top)[0]

    def ask_with_attention(self, image: Path | bytes | np.ndarray, question: str, *,
                           top: int = DEFAULT_TOP) -> tuple[list[tuple[str, float]], np.ndarray]:
        """Answer one question and return where a SAN looked.

        Args: as :meth:`ask`.
        Returns:
            (``top`` (answer, probability) pairs, float32 (L, S, S) attention of each layer over
            the image's grid, row 0 = the top of the image; each map sums to 1).
        Raises:
            InputError: the model has no attention (an MLP or LSTM).
        """
        if not self.has_attention:
            raise InputError(no_attention_message(self.model_dir, self.config.get("model")))
        outputs = self._answer([image], [question], top=top, batch_size=1)
        return outputs[0][0], outputs[1]["attention"][0]

    def ask_many(self, images: Sequence[Path | bytes | np.ndarray], questions: Sequence[str], *,
                 top: int = DEFAULT_TOP, batch_size: int = 32) -> list[list[tuple[str, float]]]:
        """Answer many questions, each about its own image, in batches.

        Args:
            images: N image paths, encoded image bytes, or float32 (4096,) feature vectors.
            questions: N question strings.
            top: answers per question, 1..K.
            batch_size: images per VGG16 call and questions per model call.
        Returns:
            N lists of ``top`` (answer, probability) pairs.
        """
        return self._answer(images, questions, top=top, batch_size=batch_size)[0]

    def _answer(self, images, questions, *, top: int, batch_size: int):
        """(top answers per question, every model output) for checked images and questions."""
        if len(images) != len(questions):
            raise InputError(f"{len(images)} images for {len(questions)} questions; give one image per question")
        self._check_top(top)
        for question in questions:
            if not isinstance(question, str) or not question.strip():
                raise InputError("a question is empty; ask something about the image")
        features = self._features_of(images, batch_size=batch_size)
        outputs = self.predict_outputs(self.encode_questions(questions), features, batch_size=batch_size)
        return self.top_answers(outputs["answer"], top=top), outputs

    def _features_of(self, images, *, batch_size: int) -> np.ndarray:
        """float32 (N, *image_shape): given feature arrays as they are, the other images through VGG16."""
        features = np.zeros((len(images), *self.image_shape), dtype=np.float32)
        to_encode = [i for i, image in enumerate(images) if not isinstance(image, np.ndarray)]
        for i, image in enumerate(images):
            if isinstance(image, np.ndarray):
                if image.shape != self.image_shape:
                    raise InputError(f"image features must have shape {self.image_shape} "
                                     f"({self._layout_name()}), got {image.shape}")
                features[i] = image
        if to_encode:
            features[to_encode] = self.image_features([images[i] for i in to_encode], batch_size=batch_size)
        return features

    def warm_up(self) -> None:
        """Run one dummy prediction so the first real request does not pay for graph tracing."""
        if self._cnn is not None:
            from vqa.features import preprocess_images

            blank = preprocess_images(np.full((1, self.image_size, self.image_size, 3), 128, dtype=np.float32))
            with self._keras_lock:
                _call(self._cnn, blank)
        self.predict_proba(self.encode_questions(["what is this?"]), np.zeros((1, *self.image_shape), np.float32))

    def info(self) -> dict:
        """What is loaded, for health checks: model kind, sizes, CNN weights and library versions."""
        import keras

        return {"model": self.config.get("model", self.model.name), "model_dir": str(self.model_dir),
                "num_answers": len(self.answers), "vocabulary_size": len(self.words),
                "max_question_length": self.max_question_length, "cnn_weights": self.cnn_weights,
                "image_layout": self.image_layout, "image_size": self.image_size,
                "attention": self.has_attention,
                "checkpoint": self.checkpoint,
                "spacy_model": self.config.get("spacy_model"),
                "versions": {"vqa": __version__, "keras": keras.__version__, "backend": keras.backend.backend(),
                             "numpy": np.__version__}}


ATTENTION_MODELS = ("san",)


def no_attention_message(model_dir: Path, kind: str | None) -> str:
    """The one line that says a model has no attention maps."""
    return f"{model_dir}: a {kind or 'model'} model has no attention; train one with 'vqa train san'"


def check_attention(model_dir: Path) -> None:
    """Raise InputError, from config.json alone (no TensorFlow), when the model has no attention maps."""
    try:
        kind = modeldir.read_config(model_dir)["model"]
    except InputError:
        return  # check_model_dir names what is wrong with the directory
    if kind not in ATTENTION_MODELS:
        raise InputError(no_attention_message(model_dir, kind))


# --------------------------------------------------------------------------- the sentence
def _call(model, inputs):
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


def answer_sentence(question: str, answer: str, probability: float) -> str:
    """The tutorial's one-line reply, e.g. "We're 74.96% sure that the ground is green."

    "What color is X?" gives "X is <answer>", "How many X ...?" with a number gives
    "there are <answer> X"; anything else, and every yes/no answer, gives
    'the answer to "<question>" is <answer>'.

    Args:
        question: the question asked.
        answer: the (top) answer.
        probability: its probability in [0, 1].
    Returns:
        One sentence.
    """
    text = " ".join(question.split()).rstrip("?.! ")
    return f"We're {100 * probability:.2f}% sure that {_answer_clause(text, answer)}."


def _answer_clause(question: str, answer: str) -> str:
    """"the ground is green" for "What color is the ground" + "green"; a safe fallback otherwise."""
    if answer.strip().lower() in ("yes", "no"):
        return f'the answer to "{question}?" is {answer}'
    color = _COLOR_QUESTION.match(question)
    if color and color.group(2).strip():
        return f"{color.group(2).strip()} {color.group(1).lower()} {answer}"
    count = _COUNT_QUESTION.match(question)
    if count and (answer.strip().isdigit() or answer.strip().lower() in _NUMBER_WORDS):
        words = count.group(1).split()
        noun = []
        for word in words:
            if word.lower() in _AUXILIARIES:
                break
            noun.append(word)
        if noun:
            if answer.strip().lower() in ("1", "one"):  # not "there is 1 squares"
                return f"the number of {' '.join(noun)} is {answer}"
            return f"there are {answer} {' '.join(noun)}"
    return f'the answer to "{question}?" is {answer}'
