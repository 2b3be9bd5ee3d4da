"""The Predictor's answering part: the trained Keras model, its answer list, top-k and attention.

:class:`Answerer` takes encoded questions and image features (from
:mod:`vqa.encoders`, or a prepared HDF5 file and a features file) and returns
answer probabilities, the top answers, and a SAN's attention maps.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager

import numpy as np

from vqa.batching import Batcher
from vqa.encoders import call_model
from vqa.errors import InputError


class Answerer:
    """A loaded VQA model with its answers: (token ids, image features) -> probabilities and answers.

    Args:
        model: the Keras model (named inputs ``question``, ``image_features``; output ``answer``
            and, for a SAN, ``attention``).
        answers: K answer strings (column i of the probabilities is ``answers[i]``).
        vocabulary_size: number of token ids the model knows.
        image_shape: shape of one image's features: (4096,) or (S, S, 512).
        layout_name: the features in words, for error messages.
        max_batch_size: most questions per model call when single requests are batched (1: no batching).
        batch_timeout_s: longest wait for such a batch to fill.
        loss: the run's ``--loss``; a "soft" model's K sigmoid scores are divided by their sum, so
            that its probabilities, like a softmax's, sum to 1 over the K answers (same ranking).
    """

    def __init__(self, model, answers: Sequence[str], *, vocabulary_size: int, image_shape: tuple[int, ...],
                 layout_name: str, max_batch_size: int = 1, batch_timeout_s: float = 0.0, loss: str = "modal"):
        self.model = model
        self.loss = loss
        self.answers = list(answers)
        self.vocabulary_size = vocabulary_size
        self.image_shape = tuple(image_shape)
        self._layout_name = layout_name
        self._lock = threading.Lock()
        self.batcher = Batcher(self._run_rows, max_batch_size=max_batch_size, timeout_s=batch_timeout_s,
                               stage="answer")

    def close(self) -> None:
        """Let the model batcher's thread end (see :meth:`vqa.batching.Batcher.close`)."""
        self.batcher.close()

    @property
    def has_attention(self) -> bool:
        """Whether the model outputs attention maps (the SAN)."""
        return isinstance(self.model.output, dict) and "attention" in self.model.output

    @property
    def grid_size(self) -> int | None:
        """S, the side of the attention grid (None for fc7 models)."""
        return self.image_shape[0] if len(self.image_shape) == 3 else None

    def outputs(self, token_ids: np.ndarray, image_features: np.ndarray, *, batch_size: int = 512,
                progress: bool = False) -> dict[str, np.ndarray]:
        """Every output of the model: ``"answer"`` float32 (N, K) and, for a SAN, ``"attention"``
        float32 (N, L, S, S), each layer's attention over the grid (row-major; sums to 1).

        Args:
            token_ids: int (N, T) question token ids.
            image_features: float32 (N, *image_shape) features of each question's image.
            batch_size: questions per model call.
            progress: show a tqdm progress bar.
        """
        from tqdm import tqdm

        token_ids, image_features = self.checked_inputs(token_ids, image_features)
        if batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {batch_size}")
        parts: dict[str, list[np.ndarray]] = {}
        starts = range(0, len(token_ids), batch_size)
        for start in tqdm(starts, desc="predict", unit="batch", disable=not progress, leave=False):
            stop = start + batch_size
            for name, value in self.run_model(token_ids[start:stop], image_features[start:stop]).items():
                parts.setdefault(name, []).append(value)
        out = {name: np.concatenate(values) for name, values in parts.items()}
        out.setdefault("answer", np.zeros((0, len(self.answers)), np.float32))
        return out

    def expecting(self) -> AbstractContextManager:
        """Announce a question on its way to :meth:`answer_one` (while it is tokenised)."""
        return self.batcher.expecting()

    def answer_one(self, token_ids: np.ndarray, image_features: np.ndarray, *, arrival=None,
                   timing: dict | None = None, deadline: float | None = None) -> dict[str, np.ndarray]:
        """Every output for one question, run in a batch shared with other threads' questions.

        Args:
            token_ids: int (T,) one question's ids.
            image_features: float32 ``image_shape``.
            arrival: the :meth:`expecting` arrival of this question.
            timing: a dict to fill with ``answer_queue`` and ``model`` seconds and ``answer_batch`` (the size).
            deadline: when to stop waiting for the batch (``time.perf_counter()``; None: never);
                DeadlineExceeded then.
        Returns:
            ``"answer"`` float32 (K,) and, for a SAN, ``"attention"`` float32 (L, S, S).
        """
        token_ids, image_features = self.checked_inputs(token_ids[None], image_features[None])
        outputs, batch = self.batcher.submit((token_ids[0], image_features[0]), arrival=arrival, deadline=deadline)
        if timing is not None:
            timing.update(answer_queue=batch["queue"], model=batch["run"], answer_batch=batch["batch_size"])
        return outputs

    def _run_rows(self, items: list[tuple[np.ndarray, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """The batcher's call: (ids, features) pairs -> one dict of output rows each."""
        outputs = self.run_model(np.stack([ids for ids, _ in items]), np.stack([row for _, row in items]))
        return [{name: value[i] for name, value in outputs.items()} for i in range(len(items))]

    def run_model(self, token_ids: np.ndarray, image_features: np.ndarray) -> dict[str, np.ndarray]:
        """One model call on checked inputs: ``answer`` (n, K) and, for a SAN, ``attention`` (n, L, S, S)."""
        with self._lock:
            outputs = call_model(self.model, {"question": token_ids, "image_features": image_features})
        outputs = outputs if isinstance(outputs, dict) else {"answer": outputs}
        if self.loss == "soft":
            scores = np.asarray(outputs["answer"], dtype=np.float32)
            outputs["answer"] = scores / np.maximum(scores.sum(axis=1, keepdims=True), np.finfo(np.float32).tiny)
        if "attention" in outputs and self.grid_size:
            attention = outputs["attention"]
            outputs["attention"] = attention.reshape(len(attention), -1, self.grid_size, self.grid_size)
        return outputs

    def checked_inputs(self, token_ids, image_features) -> tuple[np.ndarray, np.ndarray]:
        """The two arrays as int32 / float32, or InputError describing the mismatch."""
        token_ids = np.asarray(token_ids)
        image_features = np.asarray(image_features, dtype=np.float32)
        if token_ids.ndim != 2 or not np.issubdtype(token_ids.dtype, np.integer):
            raise InputError(f"token ids must be an integer (N, T) array, got {token_ids.dtype} {token_ids.shape}")
        expected = (len(token_ids), *self.image_shape)
        if image_features.shape != expected:
            raise InputError(f"image features must be {expected} for {len(token_ids)} questions "
                             f"({self._layout_name}), got {image_features.shape}")
        if token_ids.size and (token_ids.min() < 0 or token_ids.max() >= self.vocabulary_size):
            raise InputError(f"token ids must be in [0, {self.vocabulary_size}); encode the questions with this "
                             "model's vocabulary (re-run 'vqa prepare' with the same data)")
        return token_ids.astype(np.int32, copy=False), image_features

    def top_answers(self, probabilities: np.ndarray, *, top: int) -> list[list[tuple[str, float]]]:
        """The ``top`` most probable answers of each row of float32 (N, K), most probable first."""
        probabilities = np.asarray(probabilities)
        self.check_top(top)
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top]
        return [[(self.answers[i], float(row[i])) for i in indices] for row, indices in zip(probabilities, order)]

    def best_answers(self, probabilities: np.ndarray) -> list[str]:
        """The most probable answer of each row of float32 (N, K)."""
        return [self.answers[i] for i in np.argmax(np.asarray(probabilities), axis=1)]

    def check_top(self, top: int) -> None:
        """InputError unless ``top`` is an integer in 1..K."""
        if not isinstance(top, (int, np.integer)) or not 1 <= top <= len(self.answers):
            raise InputError(f"top must be an integer in 1..{len(self.answers)}, got {top!r}")

    def warm_up(self, token_ids: np.ndarray) -> None:
        """One model call on ``token_ids`` (1, T) and blank features, so lazy set-up happens now."""
        self.run_model(*self.checked_inputs(token_ids, np.zeros((len(token_ids), *self.image_shape), np.float32)))
