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

Bounded waits: an :class:`Admission` counts the requests inside (admitted, not yet answered) and
refuses one beyond ``max_queue`` at once (:class:`vqa.errors.Overloaded`); each admitted request gets
a deadline ``timeout_s`` ahead, which :meth:`Batcher.submit` keeps: a job still queued at its deadline
is removed and never computed, one whose batch is still running at it has its result dropped, and
either way its caller gets :class:`vqa.errors.DeadlineExceeded` instead of waiting on. 0 turns
either bound off.

All of them report to an optional observer (metrics): ``batch(stage, size, seconds)``,
``queue_depth(stage, depth)``, ``queue_time(stage, seconds)``, ``cache(hit)``, ``shed()``,
``timeout(stage)``; see :class:`Observer`.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Protocol

import numpy as np

from vqa.errors import DeadlineExceeded, InputError, Overloaded

class Observer(Protocol):
    """What a batcher and a cache report (the server turns these into Prometheus metrics)."""

    def batch(self, stage: str, size: int, seconds: float) -> None: ...

    def queue_depth(self, stage: str, depth: int) -> None: ...

    def cache(self, hit: bool) -> None: ...

    def queue_time(self, stage: str, seconds: float) -> None: ...

    def shed(self) -> None: ...

    def timeout(self, stage: str) -> None: ...


class NullObserver:
    """Reports nowhere (the default)."""

    def batch(self, stage: str, size: int, seconds: float) -> None:
        pass

    def queue_depth(self, stage: str, depth: int) -> None:
        pass

    def cache(self, hit: bool) -> None:
        pass

    def queue_time(self, stage: str, seconds: float) -> None:
        pass

    def shed(self) -> None:
        pass

    def timeout(self, stage: str) -> None:
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


def check_limits(max_queue, request_timeout_ms, *, names: Sequence[str] = ("max_queue", "request_timeout_ms"),
                 ) -> tuple[int, float]:
    """The two bounds of :class:`Admission` (numbers or strings) as (int >= 0, float >= 0); 0 = no bound.

    Raises:
        InputError: naming the first bad one (by ``names``).
    """
    return _parsed(names[0], max_queue, int, 0), _parsed(names[1], request_timeout_ms, float, 0)


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


class Admission:
    """Bounds the requests inside a Predictor: at most ``max_queue`` at once, each for ``timeout_s``.

    Args:
        max_queue: most requests admitted and not yet answered (0: no bound).
        timeout_s: seconds from admission to the request's deadline (0: none).
    """

    def __init__(self, max_queue: int = 0, timeout_s: float = 0.0):
        self.max_queue, self.timeout_s = max_queue, timeout_s
        self.observer: Observer = NullObserver()
        self.retry_after = max(1, math.ceil(timeout_s))  # seconds: about when the queue has moved on
        self._inside = 0
        self._lock = threading.Lock()

    @contextmanager
    def admit(self):
        """Count one request in for the ``with`` block; yields its deadline (a ``time.perf_counter()``
        value, or None). Raises Overloaded at once when ``max_queue`` requests are inside."""
        with self._lock:
            full = 0 < self.max_queue <= self._inside
            self._inside += 0 if full else 1
        if full:
            self.observer.shed()
            raise Overloaded(f"{self.max_queue} requests are already waiting (max_queue); retry in "
                             f"{self.retry_after} s", retry_after=self.retry_after)
        try:
            yield time.perf_counter() + self.timeout_s if self.timeout_s > 0 else None
        except DeadlineExceeded as error:
            error.retry_after = self.retry_after  # the batcher that raised it knows no timeout
            raise
        finally:
            with self._lock:
                self._inside -= 1

    @property
    def inside(self) -> int:
        """Requests admitted and not yet answered."""
        with self._lock:
            return self._inside


class _Job:
    """One submitted item and, once its batch ran, its result or error."""

    __slots__ = ("item", "deadline", "done", "expired", "result", "error", "submitted", "started", "seconds",
                 "batch_size")

    def __init__(self, item, deadline: float | None = None):
        self.item, self.deadline, self.done, self.expired = item, deadline, threading.Event(), False
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
        self._solo = threading.Lock()  # max_batch_size 1: one item at a time, waited for up to its deadline

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

    def submit(self, item, *, arrival: Arrival | None = None, deadline: float | None = None) -> tuple[object, dict]:
        """Run ``item`` in a batch; blocks until its result is ready, or until ``deadline``.

        Args:
            deadline: a ``time.perf_counter()`` value (an :meth:`Admission.admit` deadline), or None.
        Returns:
            (its result, timing: ``queue`` and ``run`` seconds, ``batch_size``).
        Raises:
            DeadlineExceeded: the deadline passed first (the item was dropped, or its result discarded).
            whatever ``run_batch`` raised for this item alone.
        """
        job = _Job(item, deadline)
        if self.max_batch_size == 1:  # no thread hop, no batch: the caller's thread runs it
            if arrival is not None:
                arrival.release()
            if deadline is not None and deadline <= job.submitted:
                self._expire(job, queued=True)  # out of time before it got here (decoding, an earlier stage)
            if not self._solo.acquire(timeout=_remaining(deadline, default=-1)):
                self._expire(job, queued=True)
            try:
                self._run([job])
            finally:
                self._solo.release()
        else:
            self._enqueue(job, arrival)
            finished = job.done.wait(_remaining(deadline))
            with self._condition:
                if not finished and job in self._queue:
                    self._queue.remove(job)
                    job.expired = True
            if job.expired or not job.done.is_set():  # removed unrun, or its batch still runs
                self._expire(job, queued=job.expired)
        if job.error is not None:
            raise job.error
        self.observer.queue_time(self.stage, job.started - job.submitted)
        return job.result, {"queue": job.started - job.submitted, "run": job.seconds, "batch_size": job.batch_size}

    def close(self) -> None:
        """Let the batcher thread end once its queue is empty (a model being dropped); a later
        :meth:`submit` starts a new one, so a straggling caller still gets its answer."""
        with self._condition:
            self._closing = True
            self._condition.notify_all()

    def _expire(self, job: _Job, *, queued: bool) -> None:
        """Give up on ``job`` at its deadline: count it, raise DeadlineExceeded."""
        waited = (time.perf_counter() if queued else job.started) - job.submitted
        self.observer.queue_time(self.stage, waited)
        self.observer.timeout(self.stage)
        what = "waiting for" if queued else "in"
        raise DeadlineExceeded(f"the request timed out {what} its {self.stage} batch (request_timeout_ms); "
                               "the server is busy, retry shortly")

    def queue_depth(self) -> int:
        """Items waiting for a batch."""
        with self._condition:
            return len(self._queue)

    def _enqueue(self, job: _Job, arrival: Arrival | None) -> None:
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

    def _arrived(self) -> None:
        with self._condition:
            self._arriving -= 1
            self._condition.notify_all()

    def _loop(self) -> None:
        while (batch := self._next_batch()) is not None:
            if batch:  # empty when every queued job had passed its deadline
                self._run(batch)

    def _next_batch(self) -> list[_Job] | None:
        """Wait for an item, then for more while others are on their way, up to the timeout; None once closed
        with nothing queued (the thread then ends), [] when every queued job had passed its deadline."""
        with self._condition:
            while not self._queue:
                if self._closing:
                    self._thread = None
                    return None
                self._condition.wait()
            deadline = time.perf_counter() + self.timeout_s
            while len(self._queue) < self.max_batch_size and self._arriving > 0:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._condition.wait(remaining)
            now = time.perf_counter()
            for job in self._queue:
                if job.deadline is not None and job.deadline <= now:  # removed, never run; its caller reports it
                    job.expired = True
                    job.done.set()
            live = [job for job in self._queue if not job.expired]
            batch, self._queue[:] = live[:self.max_batch_size], live[self.max_batch_size:]
            depth = len(self._queue)
        self.observer.queue_depth(self.stage, depth)
        return batch

    def _run(self, batch: list[_Job]) -> None:
        """Run a batch; if it fails, run each item alone so that one bad item fails only itself."""
        started = time.perf_counter()
        for job in batch:
            job.started = started
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
            job.result, job.error, job.seconds, job.batch_size = result, error, seconds, len(batch)
            job.done.set()


def _remaining(deadline: float | None, default: float | None = None) -> float | None:
    """Seconds until ``deadline`` (at least 0), or ``default`` without one."""
    return default if deadline is None else max(0.0, deadline - time.perf_counter())


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
