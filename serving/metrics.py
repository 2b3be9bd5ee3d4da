"""Prometheus metrics of the VQA server, correct across gunicorn's worker processes.

Every worker process keeps its own counters. With ``PROMETHEUS_MULTIPROC_DIR``
set to an empty folder before the workers start (``vqa serve`` makes a fresh one),
``prometheus_client`` keeps them in memory-mapped files there and ``GET /metrics``
on any worker adds up every worker's (its multiprocess mode). Without it, each
worker reports its own figures only (fine for one worker).

The library side (:mod:`vqa.batching`) knows nothing of Prometheus: :class:`Metrics`
is the observer the Predictor's batchers and feature cache report to.
"""

from __future__ import annotations

import atexit
import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
INFO_LABELS = ("model", "checkpoint", "cnn_weights", "image_layout", "max_batch_size", "feature_cache_mb")


def multiprocess_mode() -> bool:
    """Whether metrics are shared between worker processes (``PROMETHEUS_MULTIPROC_DIR`` is set)."""
    return bool(os.environ.get(MULTIPROCESS_ENV))


class Metrics:
    """The server's metrics, registered in a registry of their own (one per app)."""

    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("vqa_requests", "HTTP requests answered, by route, method and status",
                                ("route", "method", "status"), registry=r)
        self.latency = Histogram("vqa_request_duration_seconds", "Time to answer a request, by route", ("route",),
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("vqa_batch_size", "Items per VGG16 (image) or model (answer) call",
                                    ("stage",), buckets=BATCH_SIZE_BUCKETS, registry=r)
        self.batch_seconds = Histogram("vqa_batch_duration_seconds", "Time of one batched call", ("stage",),
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.cache_hits = Counter("vqa_feature_cache_hits", "Images whose features came from the cache", registry=r)
        self.cache_misses = Counter("vqa_feature_cache_misses", "Images that went through VGG16", registry=r)
        self.queue_seconds = Histogram("vqa_queue_duration_seconds", "Time a request waited for its batch "
                                       "(timed-out ones too), by stage", ("stage",), buckets=LATENCY_BUCKETS,
                                       registry=r)
        self.shed_requests = Counter("vqa_shed_requests", "Requests answered 503 at once: max_queue were inside",
                                     registry=r)
        self.timeouts = Counter("vqa_request_timeouts", "Requests answered 503 after request_timeout_ms, by the "
                                "stage they waited for", ("stage",), registry=r)
        self.queue = Gauge("vqa_queue_depth", "Single requests waiting for a batch", ("stage",), registry=r,
                           multiprocess_mode="livesum")
        self.model = Gauge("vqa_model_info", "The model this server answers with (value 1)", INFO_LABELS,
                           registry=r, multiprocess_mode="max")
        self._model_labels: tuple | None = None
        # livemax: a worker that has not swapped yet, or has exited, does not hold the figure up
        self.version = Gauge("vqa_model_version", "The model version answering new requests (a model repository's "
                             "version number; 1 for a plain model directory)", registry=r, multiprocess_mode="livemax")
        if multiprocess_mode():
            # a worker that exits cleanly takes its live gauges (queue depth) with it
            atexit.register(multiprocess.mark_process_dead, os.getpid())

    # --------------------------------------------------------------- vqa.batching.Observer
    def batch(self, stage: str, size: int, seconds: float) -> None:
        """One batched call of ``size`` items took ``seconds``."""
        self.batch_size.labels(stage).observe(size)
        self.batch_seconds.labels(stage).observe(seconds)

    def queue_depth(self, stage: str, depth: int) -> None:
        """``depth`` items wait in ``stage``'s queue now."""
        self.queue.labels(stage).set(depth)

    def cache(self, hit: bool) -> None:
        """A feature-cache lookup."""
        (self.cache_hits if hit else self.cache_misses).inc()

    def queue_time(self, stage: str, seconds: float) -> None:
        """A request waited ``seconds`` for its ``stage`` batch."""
        self.queue_seconds.labels(stage).observe(seconds)

    def shed(self) -> None:
        """A request was refused at once (max_queue)."""
        self.shed_requests.inc()

    def timeout(self, stage: str) -> None:
        """A request gave up waiting for its ``stage`` batch (request_timeout_ms)."""
        self.timeouts.labels(stage).inc()

    # --------------------------------------------------------------- the server
    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One answered request."""
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def model_info(self, **labels) -> None:
        """Publish what is loaded as ``vqa_model_info{...} 1`` (a previous model's labels are set to 0 and dropped)."""
        values = tuple(str(labels.get(name)) for name in INFO_LABELS)
        if self._model_labels not in (None, values):
            self.model.labels(*self._model_labels).set(0)  # what other workers' figures are merged with
            self.model.remove(*self._model_labels)
        self._model_labels = values
        self.model.labels(*values).set(1)

    def model_version(self, version: str) -> None:
        """Publish the version answering new requests as ``vqa_model_version``."""
        self.version.set(float(version))

    def exposition(self) -> tuple[bytes, str]:
        """(the Prometheus text of every worker's metrics, or this one's, its content type)."""
        if multiprocess_mode():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
