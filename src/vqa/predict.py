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

The Predictor is the public face of three parts with one job each, which callers
use directly for batch work: ``predictor.images`` (:class:`vqa.encoders.ImageEncoder`:
decode, VGG16, features), ``predictor.questions`` (:class:`vqa.encoders.QuestionEncoder`:
spaCy tokens -> ids) and ``predictor.answerer`` (:class:`vqa.answerer.Answerer`: the
Keras model, top-k, attention).

Thread safety: one Predictor may be shared by many threads (a threaded web
server). Image decoding runs concurrently; spaCy's tokenizer, VGG16 and the VQA
model each run under their part's lock, one call at a time. TensorFlow
already spreads one call over all cores, so serialising loses little, and it
keeps the models' lazily built state and spaCy's shared string store free of
races. Models are called eagerly, so a batch of any size never re-traces.

This module imports neither TensorFlow nor spaCy until a Predictor is built, and
the model directory is checked (``vqa.modeldir``) before TensorFlow is imported.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vqa import __version__, artifacts, modeldir
from vqa.config import ATTENTION_MODELS, CHECKPOINT, FEATURES_BATCH_SIZE, TOP_ANSWERS
from vqa.errors import InputError

if TYPE_CHECKING:
    from vqa.encoders import ImageEncoder

_AUXILIARIES = {"is", "are", "was", "were", "do", "does", "did", "can", "could", "will", "would", "should",
                "has", "have", "had", "in", "on", "at", "of", "there"}
_NUMBER_WORDS = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"}
_COLOR_QUESTION = re.compile(r"^what\s+colou?rs?\s+(is|are|was|were)\s+(.+)$", re.IGNORECASE)
_COUNT_QUESTION = re.compile(r"^how\s+many\s+(.+)$", re.IGNORECASE)


class Predictor:
    """A trained VQA model, its vocabulary and (optionally) VGG16, ready to answer questions.

    The public face of three parts, each with one job and each holding its own state:
    :attr:`images` (:class:`vqa.encoders.ImageEncoder`: decode, VGG16, features, cache),
    :attr:`questions` (:class:`vqa.encoders.QuestionEncoder`: spaCy tokens -> ids) and
    :attr:`answerer` (:class:`vqa.answerer.Answerer`: the Keras model, its answers, top-k,
    attention). Batch callers use the parts directly (``predictor.questions.encode(...)``,
    ``predictor.answerer.outputs(...)``); the Predictor adds what needs them together.

    Args:
        model_dir: a model directory written by ``vqa train``.
        cnn_weights: VGG16 weights for new images: ``"imagenet"``, a local VGG16 ``.h5``,
            ``"random"`` (tests/demos), or None for no CNN (callers with precomputed
            fc7 features, such as the evaluation). Use the weights the training features
            were computed with: a clear mismatch is refused (`vqa.features.check_cnn_weights`).
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
        images: an :class:`vqa.encoders.ImageEncoder` to share, e.g. another Predictor's ``images``
            (a server swapping model versions loads no second VGG16 and keeps its feature cache).
            Used when it fits this model (:meth:`~vqa.encoders.ImageEncoder.fits`: the same
            ``cnn_weights``, layout, image size and feature shape), with its own batching and cache
            settings; otherwise an encoder is built from the arguments above, as without it.
        max_queue: most single questions inside at once (asked, not yet answered); one more raises
            :class:`vqa.errors.Overloaded` at once (0, the default: no bound).
        request_timeout_ms: longest a single question may wait for its batches, from the moment it is
            asked; then it is dropped and raises :class:`vqa.errors.DeadlineExceeded` (0, the default: no bound).
    Raises:
        InputError: not a finished model directory, an unknown/missing checkpoint, or a bad knob.
    """

    def __init__(self, model_dir: Path, *, cnn_weights: str | None = artifacts.IMAGENET_WEIGHTS,
                 checkpoint: str = CHECKPOINT, spacy_model: str | Path | None = None, max_batch_size: int = 1,
                 batch_timeout_ms: float = 0.0, feature_cache_mb: float = 0.0, max_queue: int = 0,
                 request_timeout_ms: float = 0.0, images: ImageEncoder | None = None):
        from vqa.answerer import Answerer
        from vqa.batching import Admission, check_batching, check_limits
        from vqa.encoders import ImageEncoder, QuestionEncoder

        max_batch_size, batch_timeout_ms, feature_cache_mb = check_batching(max_batch_size, batch_timeout_ms,
                                                                            feature_cache_mb)
        max_queue, request_timeout_ms = check_limits(max_queue, request_timeout_ms)
        batching = {"max_batch_size": max_batch_size, "batch_timeout_s": batch_timeout_ms / 1000}
        self.admission = Admission(max_queue, request_timeout_ms / 1000)
        self.model_dir, self.checkpoint = Path(model_dir), checkpoint
        if cnn_weights is not None:  # a clear CNN mismatch fails before TensorFlow loads anything
            from vqa.features import check_cnn_weights

            modeldir.check_model_dir(self.model_dir, checkpoint=checkpoint)
            check_cnn_weights(modeldir.read_cnn_identity(self.model_dir), cnn_weights, model=self.model_dir)
        loaded = modeldir.load_model_dir(self.model_dir, checkpoint=checkpoint)  # checked before TensorFlow loads
        self.config = loaded.config  # modeldir fills in older files' values
        layout = {"layout": str(self.config["image_layout"]), "image_size": int(self.config["image_size"]),
                  "image_shape": tuple(int(n) for n in self.config["image_feature_shape"])}
        if images is not None and images.fits(cnn_weights=cnn_weights, **layout):
            self.images = images
        else:
            self.images = ImageEncoder(cnn_weights, **layout, **batching,
                                       cache_bytes=int(feature_cache_mb * 1024 * 1024))
        self.questions = QuestionEncoder(loaded.words, max_question_length=int(self.config["max_question_length"]),
                                         spacy_model=spacy_model, trained_with=self.config["spacy_model"],
                                         source=self.model_dir)
        self.answerer = Answerer(loaded.model, loaded.answers, vocabulary_size=len(loaded.words),
                                 image_shape=self.images.image_shape, layout_name=self.images.layout_name(),
                                 loss=self.config["train"]["loss"], **batching)

    def close(self, *, keep_images: bool = False) -> None:
        """Let the batcher threads end, so that a dropped Predictor can be freed; ``keep_images`` leaves
        the images part running (another Predictor shares it). Asking again afterwards still works."""
        self.answerer.close()
        if not keep_images:
            self.images.close()

    def set_observer(self, observer) -> None:
        """Report batches, queue depths and times, cache hits, shed and timed-out questions to ``observer``
        (a :class:`vqa.batching.Observer`)."""
        self.admission.observer = observer
        self.images.batcher.observer = observer
        self.images.cache.observer = observer
        self.answerer.batcher.observer = observer

    # ----------------------------------------------------------------------- image + question -> answers
    def ask(self, image: Path | bytes | np.ndarray, question: str, *,
            top: int = TOP_ANSWERS, timing: dict | None = None) -> list[tuple[str, float]]:
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
        Raises:
            Overloaded: ``max_queue`` questions are already inside; DeadlineExceeded (a subclass): it
                waited ``request_timeout_ms`` for its batches.
        """
        return self._answer_one(image, question, top=top, timing=timing)[0]

    def ask_with_attention(self, image: Path | bytes | np.ndarray, question: str, *, top: int = TOP_ANSWERS,
                           timing: dict | None = None) -> tuple[list[tuple[str, float]], np.ndarray]:
        """Answer one question and return where a SAN looked.

        Args: as :meth:`ask`.
        Returns:
            (``top`` (answer, probability) pairs, float32 (L, S, S) attention of each layer over
            the image's grid, row 0 = the top of the image; each map sums to 1).
        Raises:
            InputError: the model has no attention (an MLP or LSTM).
        """
        if not self.answerer.has_attention:
            raise InputError(no_attention_message(self.model_dir, self.config.get("model")))
        answers, outputs = self._answer_one(image, question, top=top, timing=timing)
        return answers, outputs["attention"]

    def ask_many(self, images: Sequence[Path | bytes | np.ndarray], questions: Sequence[str], *,
                 top: int = TOP_ANSWERS, batch_size: int = FEATURES_BATCH_SIZE) -> list[list[tuple[str, float]]]:
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
        """(top answers, every output's row) for one question, through the admission, the cache and the batchers."""
        from vqa.encoders import check_questions

        timing = {} if timing is None else timing
        self.answerer.check_top(top)
        check_questions([question])
        with self.admission.admit() as deadline:
            if isinstance(image, np.ndarray):
                self.images.check_features(image)
                features, timing["cache"] = np.asarray(image, np.float32), "features"
            else:
                features = self.images.encode_one(image, timing=timing, deadline=deadline)
            with self.answerer.expecting() as arrival:
                start = time.perf_counter()
                token_ids = self.questions.encode([question])[0]
                timing["question"] = time.perf_counter() - start
                outputs = self.answerer.answer_one(token_ids, features, arrival=arrival, timing=timing,
                                                   deadline=deadline)
        return self.answerer.top_answers(outputs["answer"][None], top=top)[0], outputs

    def _answer(self, images, questions, *, top: int, batch_size: int):
        """(top answers per question, every model output) for checked images and questions."""
        from vqa.encoders import check_questions

        if len(images) != len(questions):
            raise InputError(f"{len(images)} images for {len(questions)} questions; give one image per question")
        self.answerer.check_top(top)
        check_questions(questions)
        features = self._features_of(images, batch_size=batch_size)
        outputs = self.answerer.outputs(self.questions.encode(questions), features, batch_size=batch_size)
        return self.answerer.top_answers(outputs["answer"], top=top), outputs

    def _features_of(self, images, *, batch_size: int) -> np.ndarray:
        """float32 (N, *image_shape): given feature arrays as they are, the other images through VGG16."""
        features = np.zeros((len(images), *self.images.image_shape), dtype=np.float32)
        to_encode = [i for i, image in enumerate(images) if not isinstance(image, np.ndarray)]
        for i, image in enumerate(images):
            if isinstance(image, np.ndarray):
                self.images.check_features(image)
                features[i] = image
        if to_encode:
            features[to_encode] = self.images.cached_features([images[i] for i in to_encode], batch_size=batch_size)
        return features

    def warm_up(self) -> None:
        """Run one dummy prediction so the first real request does not pay for graph tracing (VGG16 only
        once per images part: a shared, warm one is not run again)."""
        self.images.warm_up()
        self.answerer.warm_up(self.questions.encode(["what is this?"]))

    def info(self) -> dict:
        """What is loaded, for health checks: model kind, sizes, CNN weights, grid and library versions."""
        import keras

        return {"model": self.config.get("model", self.answerer.model.name), "model_dir": str(self.model_dir),
                "num_answers": len(self.answerer.answers), "vocabulary_size": len(self.questions.words),
                "max_question_length": self.questions.max_question_length, "cnn_weights": self.images.cnn_weights,
                "image_layout": self.images.layout, "image_size": self.images.image_size,
                "grid_size": self.answerer.grid_size, "attention": self.answerer.has_attention,
                "checkpoint": self.checkpoint,
                "spacy_model": self.config.get("spacy_model"),
                "versions": {"vqa": __version__, "keras": keras.__version__, "backend": keras.backend.backend(),
                             "numpy": np.__version__}}


def no_attention_message(model_dir: Path, kind: str | None) -> str:
    """The one line that says a model has no attention maps."""
    return (f"{model_dir}: a {kind or 'model'} model has no attention; "
            f"train one with 'vqa train topdown' or 'vqa train san'")


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
