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

The Predictor is a thin object over three parts with one job each, which callers
may also use directly: :class:`vqa.encoders.ImageEncoder` (decode, VGG16, features),
:class:`vqa.encoders.QuestionEncoder` (spaCy tokens -> ids) and
:class:`vqa.answerer.Answerer` (the Keras model, top-k, attention).

Thread safety: one Predictor may be shared by many threads (a threaded web
server). Image decoding runs concurrently; spaCy's tokenizer, VGG16 and the VQA
model each run under their part's lock, one call at a time. TensorFlow
already spreads one call over all cores, so serialising loses little, and it
keeps the models' lazily built state and spaCy's shared string store free of
races. Models are called eagerly, so a batch of any size never re-traces.

This module imports neither TensorFlow nor spaCy until a Predictor is built
(:func:`check_model_dir` imports neither at all).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vqa import __version__, artifacts, modeldir
from vqa.errors import InputError
from vqa.modeldir import check_model_dir  # noqa: F401  (part of this module's API)

DEFAULT_TOP = 5
_AUXILIARIES = {"is", "are", "was", "were", "do", "does", "did", "can", "could", "will", "would", "should",
                "has", "have", "had", "in", "on", "at", "of", "there"}
_NUMBER_WORDS = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"}
_COLOR_QUESTION = re.compile(r"^what\s+colou?rs?\s+(is|are|was|were)\s+(.+)$", re.IGNORECASE)
_COUNT_QUESTION = re.compile(r"^how\s+many\s+(.+)$", re.IGNORECASE)


class Predictor:
    """A trained VQA model, its vocabulary and (optionally) VGG16, ready to answer questions.

    A thin object over three parts, each with one job: :attr:`image_encoder`
    (:class:`vqa.encoders.ImageEncoder`: decode, VGG16, features), :attr:`question_encoder`
    (:class:`vqa.encoders.QuestionEncoder`: spaCy tokens -> ids) and :attr:`answerer`
    (:class:`vqa.answerer.Answerer`: the Keras model, top-k, attention).

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
        max_batch_size: single questions (:meth:`ask`, :meth:`ask_with_attention`) asked from
            different threads at once share VGG16 and model calls of up to this many items
            (1, the default: each runs alone, on its own thread).
        batch_timeout_ms: longest wait for such a batch to fill, while other questions are
            on their way (a lone question never waits).
        feature_cache_mb: megabytes of image features kept by the SHA-256 of the image's bytes,
            so a second question about the same picture skips VGG16 (0, the default: off).
    Raises:
        InputError: not a finished model directory, an unknown/missing checkpoint, or a bad knob.
    """

    def __init__(self, model_dir: Path, *, cnn_weights: str | None = "imagenet", checkpoint: str = "last",
                 spacy_model: str | Path | None = None, max_batch_size: int = 1, batch_timeout_ms: float = 0.0,
                 feature_cache_mb: float = 0.0):
        from vqa.answerer import Answerer
        from vqa.batching import check_batching
        from vqa.encoders import ImageEncoder, QuestionEncoder
        from vqa.runtime import quiet_tensorflow

        max_batch_size, batch_timeout_ms, feature_cache_mb = check_batching(max_batch_size, batch_timeout_ms,
                                                                            feature_cache_mb)
        batching = {"max_batch_size": max_batch_size, "batch_timeout_s": batch_timeout_ms / 1000}
        self.model_dir = Path(model_dir)
        self.checkpoint = checkpoint
        check_model_dir(model_dir, checkpoint=checkpoint)  # from file names, before TensorFlow is imported
        quiet_tensorflow()  # before Keras is imported: a server's log stays clean
        loaded = modeldir.load_model_dir(self.model_dir, checkpoint=checkpoint)
        self.model, self.config, self.words, self.answers = loaded.model, loaded.config, loaded.words, loaded.answers
        self.max_question_length = int(self.config["max_question_length"])  # modeldir fills in older files' values
        self.image_layout = str(self.config["image_layout"])
        self.image_size = int(self.config["image_size"])
        self.image_shape = tuple(int(n) for n in self.config["image_feature_shape"])
        self.image_encoder = ImageEncoder(cnn_weights, layout=self.image_layout, image_size=self.image_size,
                                          image_shape=self.image_shape, **batching,
                                          cache_bytes=int(feature_cache_mb * 1024 * 1024))
        self.question_encoder = QuestionEncoder(self.words, max_question_length=self.max_question_length,
                                                spacy_model=spacy_model, trained_with=self.config["spacy_model"],
                                                source=self.model_dir)
        self.answerer = Answerer(self.model, self.answers, vocabulary_size=len(self.words),
                                 image_shape=self.image_shape, layout_name=self.image_encoder.layout_name(),
                                 **batching)

    def set_observer(self, observer) -> None:
        """Report batches, queue depths and cache hits to ``observer`` (a :class:`vqa.batching.Observer`)."""
        self.image_encoder.batcher.observer = observer
        self.image_encoder.cache.observer = observer
        self.answerer.batcher.observer = observer

    @property
    def cnn_weights(self) -> str | None:
        """The VGG16 weights new images go through (None: no CNN)."""
        return self.image_encoder.cnn_weights

    @property
    def word_index(self) -> dict[str, int]:
        """Token string -> id in the model's vocabulary."""
        return self.question_encoder.word_index

    @property
    def has_attention(self) -> bool:
        """Whether the model outputs attention maps (the SAN)."""
        return self.answerer.has_attention

    @property
    def grid_size(self) -> int | None:
        """S, the side of the attention grid (None for fc7 models)."""
        return self.image_shape[0] if self.image_layout == artifacts.LAYOUT_GRID else None

    # ----------------------------------------------------------------------- the parts, one call each
    def encode_questions(self, questions: Sequence[str]) -> np.ndarray:
        """Token ids of N questions, tokenised exactly as ``vqa prepare`` did: ``QuestionEncoder.encode``."""
        return self.question_encoder.encode(questions)

    def image_features(self, images: Sequence[Path | bytes], *, batch_size: int = 32,
                       progress: bool = False) -> np.ndarray:
        """The model's VGG16 features of N images (paths or JPEG/PNG bytes): ``ImageEncoder.features``.

        Returns float32 (N, 4096) fc2 (fc7) vectors, or (N, S, S, 512) grids; VQAError when the
        Predictor was built with ``cnn_weights=None``.
        """
        return self.image_encoder.features(images, batch_size=batch_size, progress=progress)

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
        return self.answerer.outputs(token_ids, image_features, batch_size=batch_size, progress=progress)

    def top_answers(self, probabilities: np.ndarray, *, top: int = DEFAULT_TOP) -> list[list[tuple[str, float]]]:
        """The ``top`` most probable answers of each row, most probable first.

        Args:
            probabilities: float32 (N, K) from :meth:`predict_proba`.
            top: answers per row, 1..K.
        Returns:
            N lists of ``top`` (answer, probability) pairs.
        """
        return self.answerer.top_answers(probabilities, top=top)

    def best_answers(self, probabilities: np.ndarray) -> list[str]:
        """The most probable answer of each row (what a results file records).

        Args:
            probabilities: float32 (N, K) from :meth:`predict_proba`.
        Returns:
            N answer strings.
        """
        return self.answerer.best_answers(probabilities)

    # ----------------------------------------------------------------------- image + question -> answers
    def ask(self, image: Path | bytes | np.ndarray, question: str, *,
            top: int = DEFAULT_TOP, timing: dict | None = None) -> list[tuple[str, float]]:
        """Answer one question about one image (batched with other threads' questions when enabled).

        Args:
            image: an image path, encoded image bytes, or its float32 features (``image_shape``).
            question: the question text.
            top: number of answers to return, 1..K.
            timing: a dict to fill with where the time went: ``cache`` ("hit", "miss", "off" or
                "features"), seconds of ``decode``, ``image_queue``, ``vgg16``, ``question``,
                ``answer_queue``, ``model``, and the sizes ``image_batch`` and ``answer_batch``.
        Returns:
            ``top`` (answer, probability) pairs, most probable first.
        """
        return self._answer_one(image, question, top=top, timing=timing)[0]

    def ask_with_attention(self, image: Path | bytes | np.ndarray, question: str, *, top: int = DEFAULT_TOP,
                           timing: dict | None = None) -> tuple[list[tuple[str, float]], np.ndarray]:
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
        answers, outputs = self._answer_one(image, question, top=top, timing=timing)
        return answers, outputs["attention"]

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

    def _answer_one(self, image, question: str, *, top: int, timing: dict | None):
        """(top answers, every output's row) for one question, through the cache and the batchers."""
        from vqa.encoders import check_questions

        timing = {} if timing is None else timing
        self.answerer.check_top(top)
        check_questions([question])
        if isinstance(image, np.ndarray):
            self.image_encoder.check_features(image)
            features, timing["cache"] = np.asarray(image, np.float32), "features"
        else:
            features = self.image_encoder.encode_one(image, timing=timing)
        with self.answerer.expecting() as arrival:
            start = time.perf_counter()
            token_ids = self.encode_questions([question])[0]
            timing["question"] = time.perf_counter() - start
            outputs = self.answerer.answer_one(token_ids, features, arrival=arrival, timing=timing)
        return self.top_answers(outputs["answer"][None], top=top)[0], outputs

    def _answer(self, images, questions, *, top: int, batch_size: int):
        """(top answers per question, every model output) for checked images and questions."""
        from vqa.encoders import check_questions

        if len(images) != len(questions):
            raise InputError(f"{len(images)} images for {len(questions)} questions; give one image per question")
        self.answerer.check_top(top)
        check_questions(questions)
        features = self._features_of(images, batch_size=batch_size)
        outputs = self.predict_outputs(self.encode_questions(questions), features, batch_size=batch_size)
        return self.top_answers(outputs["answer"], top=top), outputs

    def _features_of(self, images, *, batch_size: int) -> np.ndarray:
        """float32 (N, *image_shape): given feature arrays as they are, the other images through VGG16."""
        features = np.zeros((len(images), *self.image_shape), dtype=np.float32)
        to_encode = [i for i, image in enumerate(images) if not isinstance(image, np.ndarray)]
        for i, image in enumerate(images):
            if isinstance(image, np.ndarray):
                self.image_encoder.check_features(image)
                features[i] = image
        if to_encode:
            features[to_encode] = self.image_encoder.cached_features([images[i] for i in to_encode],
                                                                     batch_size=batch_size)
        return features

    def warm_up(self) -> None:
        """Run one dummy prediction so the first real request does not pay for graph tracing."""
        self.image_encoder.warm_up()
        self.answerer.warm_up(self.encode_questions(["what is this?"]))

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
