"""Dynamic batching and an LRU feature cache for the Predictor's parts.

A threaded server answers each request on its own thread, but VGG16 and the VQA
model answer a batch of 8 faster per item than 8 single calls. A :class:`Batcher`
lets those threads meet: each thread submits one item and blocks; one batcher
thread runs up to ``max_batch_size`` waiting items in one call and hands each
thread its own row (TensorFlow Serving's ``max_batch_size`` and
``batch_timeout_micros``).

When to stop waiting for a batch to fill: the batcher takes whatever is queued
when it becomes free, and waits up to ``timeout_s`` for more only while other
callers have announced that they are on their way (:meth:`Batcher.expecting`,
entered before decoding an image or tokenising a question). A lone request
therefore never waits for company that is not coming, and under load batches
form by themselves while the previous batch runs.

One bad item never fails its neighbours: if a batch call raises, every item of
it is run again alone, so each caller gets its own answer or its own error.

:class:`FeatureCache` remembers computed image features by the SHA-256 of the
image's bytes, bounded in bytes, least recently used out first.

Both report to an optional observer (metrics): ``batch(stage, size, seconds)``,
``queue_depth(stage, depth)``, ``cache(hit)``; see :class:`Observer`.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Protocol

import numpy as np

from vqa.errors import InputError

class Observer(Protocol):
    """What a batcher and a cache report (the server turns these into Prometheus metrics)."""

    def batch(self, stage: str, size: int, seconds: float) -> None: ...

    def queue_depth(self, stage: str, depth: int) -> None: ...

    def cache(self, hit: bool) -> None: ...


class NullObserver:
    """Reports nowhere (the default)."""

    def batch(self, stage: str, size: int, seconds: float) -> None:
        pass

    def queue_depth(self, stage: str, depth: int) -> None:
        pass

    def cache(self, hit: bool) -> None:
        pass


def check_batching(max_batch_size, batch_timeout_ms, feature_cache_mb, *,
                   names: Sequence[str] = ("max_batch_size", "batch_timeout_ms", "feature_cache_mb"),
                   ) -> tuple[int, float, float]:
    """The three knobs (numbers or strings, e.g. from the environment) as (int >= 1, float >= 0, float >= 0).

    Raises:
        InputError: naming the first bad one (by ``names``: a flag or an environment variable).
    """
    return (_parsed(names[0], max_batch_size, int, 1), _parsed(names[1], batch_timeout_ms, float, 0),
            _parsed(names[2], feature_cache_mb, float, 0))


def _parsed(name: str, value, kind: type, low: float):
    """``value`` as ``kind`` (parsed from its text, so 2.5 is no int) at least ``low``, or InputError."""
    try:
        parsed = kind(str(value).strip())
    except ValueError:
        parsed = None
    if parsed is None or not np.isfinite(parsed) or parsed < low:
        what = "an integer" if kind is int else "a number"
        raise InputError(f"{name} must be {what} >= {low:g}, got {value!r}")
    return parsed


class _Job:
    """One submitted item and, once its batch ran, its result or error."""

    __slots__ = ("item", "done", "result", "error", "submitted", "started", "seconds", "batch_size")

    def __init__(self, item):
        self.item, self.done = item, threading.Event()
        self.result = self.error = None
        self.submitted, self.started, self.seconds, self.batch_size = time.perf_counter(), 0.0, 0.0, 0


class Arrival:
    """A caller that said it will submit soon; released when it submits, gives up or leaves."""

    def __init__(self, batcher: Batcher):
        self._batcher, self.pending = batcher, True

    def release(self) -> None:
        """Stop counting this caller as on its way (idempotent)."""
        if self.pending:
            self.pending = False
            self._batcher._arrived()


class Batcher:
    """Gathers single items from many threads into batches for ``run_batch``, on one thread.

    Args:
        run_batch: items (a list) -> one result per item, in order.
        max_batch_size: most items per call; 1 runs each item on its caller's thread, as
            without a batcher.
        timeout_s: longest wait for a batch to fill while other callers are on their way.
        stage: name reported to the observer (``"image"``, ``"answer"``).
    """

    def __init__(self, run_batch: Callable[[list], Sequence], *, max_batch_size: int = 1, timeout_s: float = 0.0,
                 stage: str = "batch"):
        self.run_batch, self.max_batch_size, self.timeout_s, self.stage = run_batch, max_batch_size, timeout_s, stage
        self.observer: Observer = NullObserver()
        self._queue: list[_Job] = []
        self._arriving = 0
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False

    @contextmanager
    def expecting(self):
        """Announce a caller that is about to :meth:`submit` (decoding, tokenising); yields its Arrival."""
        arrival = Arrival(self)
        with self._condition:
            self._arriving += 1
        try:
            yield arrival
        finally:
            arrival.release()

    def submit(self, item, *, arrival: Arrival | None = None) -> tuple[object, dict]:
        """Run ``item`` in a batch; blocks until its result is ready.

        Returns:
            (its result, timing: ``queue`` and ``run`` seconds, ``batch_size``).
        Raises:
            whatever ``run_batch`` raised for this item alone.
        """
        if self.max_batch_size == 1:  # today's behaviour: no thread hop, no waiting
            if arrival is not None:
                arrival.release()
            job = _Job(item)
            self._run([job])
        else:
            job = self._enqueue(item, arrival)
            job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result, {"queue": job.started - job.submitted, "run": job.seconds, "batch_size": job.batch_size}

    def close(self) -> None:
        """Let the batcher thread end once its queue is empty (a model being dropped); a later
        :meth:`submit` starts a new one, so a straggling caller still gets its answer."""
        with self._condition:
            self._closing = True
            self._condition.notify_all()

    def queue_depth(self) -> int:
        """Items waiting for a batch."""
        with self._condition:
            return len(self._queue)

    def _enqueue(self, item, arrival: Arrival | None) -> _Job:
        job = _Job(item)
        with self._condition:
            self._queue.append(job)
            if arrival is not None and arrival.pending:
                arrival.pending = False
                self._arriving -= 1
            self._closing = False
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=f"vqa-batcher-{self.stage}", daemon=True)
                self._thread.start()
            self._condition.notify_all()
            depth = len(self._queue)
        self.observer.queue_depth(self.stage, depth)
        return job

    def _arrived(self) -> None:
        with self._condition:
            self._arriving -= 1
            self._condition.notify_all()

    def _loop(self) -> None:
        while batch := self._next_batch():
            self._run(batch)

    def _next_batch(self) -> list[_Job]:
        """Wait for an item, then for more while others are on their way, up to the timeout; [] once closed
        with nothing queued (the thread then ends)."""
        with self._condition:
            while not self._queue:
                if self._closing:
                    self._thread = None
                    return []
                self._condition.wait()
            deadline = time.perf_counter() + self.timeout_s
            while len(self._queue) < self.max_batch_size and self._arriving > 0:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._condition.wait(remaining)
            batch, self._queue[:] = self._queue[:self.max_batch_size], self._queue[self.max_batch_size:]
            depth = len(self._queue)
        self.observer.queue_depth(self.stage, depth)
        return batch

    def _run(self, batch: list[_Job]) -> None:
        """Run a batch; if it fails, run each item alone so that one bad item fails only itself."""
        started = time.perf_counter()
        try:
            results = list(self.run_batch([job.item for job in batch]))
            errors = [None] * len(batch)
        except Exception as error:  # noqa: BLE001 - handed to the callers, never lost
            if len(batch) == 1:
                results, errors = [None], [error]
            else:
                for job in batch:
                    self._run([job])
                return
        seconds = time.perf_counter() - started
        self.observer.batch(self.stage, len(batch), seconds)
        for job, result, error in zip(batch, results, errors):
            job.result, job.error, job.started, job.seconds, job.batch_size = result, error, started, seconds, len(batch)
            job.done.set()


class FeatureCache:
    """Image features by the SHA-256 of the image's bytes, at most ``max_bytes``, least recently used out first.

    Args:
        max_bytes: total size of the stored arrays; 0 turns the cache off.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self.observer: Observer = NullObserver()
        self._entries: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """Whether anything is kept."""
        return self.max_bytes > 0

    @staticmethod
    def key(data: bytes) -> bytes:
        """The cache key of an image's encoded bytes."""
        return hashlib.sha256(data).digest()

    def get(self, key: bytes) -> np.ndarray | None:
        """The stored features (read-only), or None; counts a hit or a miss."""
        with self._lock:
            features = self._entries.get(key)
            if features is not None:
                self._entries.move_to_end(key)
        self.observer.cache(features is not None)
        return features

    def put(self, key: bytes, features: np.ndarray) -> None:
        """Store a copy of ``features``, evicting the least recently used until it fits."""
        features = np.array(features, dtype=np.float32, copy=True)
        features.flags.writeable = False  # shared by every later request for the same image
        if features.nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            self._bytes -= 0 if old is None else old.nbytes
            while self._entries and self._bytes + features.nbytes > self.max_bytes:
                self._bytes -= self._entries.popitem(last=False)[1].nbytes
            self._entries[key] = features
            self._bytes += features.nbytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def size_bytes(self) -> int:
        """Bytes of features stored now."""
        with self._lock:
            return self._bytes
