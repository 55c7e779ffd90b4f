"""The server's Prometheus metrics (``GET /metrics``, the text format), in a registry of its own.

Every series is labelled by ``model`` and ``version``, and only for the models the server loaded:
a request for an unknown name is answered 404 and counted nowhere, so no request can add a label
value (an unbounded label set is a memory leak a client could drive).

==================================  =========  ==============================================================
name                                kind       what
==================================  =========  ==============================================================
``alexnet_serve_requests_total``    counter    inference requests (``/v2/.../infer`` and ``/predict``) answered
``alexnet_serve_failures_total``    counter    those answered with an error, by HTTP ``code`` (400, 503, 504…)
``alexnet_serve_queue_seconds``     histogram  a request's wait from the queue to the start of its batch
``alexnet_serve_compute_seconds``   histogram  one batch's run of the model, preprocessed input to probabilities
``alexnet_serve_batch_size``        histogram  images per batch run (dynamic batching at work: counts above 1)
``alexnet_serve_queue_depth``       gauge      requests waiting now
==================================  =========  ==============================================================
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LABELS = ("model", "version")
SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class ModelMetrics:
    """One model version's series (the label values bound), what its batcher and routes record into."""

    model: str
    version: str
    requests: Counter
    failures: Counter  # the family: its children are made per HTTP code
    queue_seconds: Histogram
    compute_seconds: Histogram
    batch_size: Histogram
    queue_depth: Gauge

    def failed(self, status: int) -> None:
        self.failures.labels(self.model, self.version, str(status)).inc()


class Metrics:
    """The registry and its metric families; :meth:`of` binds one model version's labels."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("alexnet_serve_requests", "Inference requests answered", LABELS, registry=r)
        self.failures = Counter("alexnet_serve_failures", "Inference requests answered with an error", (*LABELS, "code"), registry=r)
        self.queue_seconds = Histogram("alexnet_serve_queue_seconds", "Wait from the queue to the start of the batch",
                                       LABELS, buckets=SECONDS, registry=r)
        self.compute_seconds = Histogram("alexnet_serve_compute_seconds", "Model run of one batch", LABELS, buckets=SECONDS, registry=r)
        self.batch_size = Histogram("alexnet_serve_batch_size", "Images per batch run", LABELS, buckets=SIZES, registry=r)
        self.queue_depth = Gauge("alexnet_serve_queue_depth", "Requests waiting", LABELS, registry=r)

    def of(self, model: str, version: str) -> ModelMetrics:
        labels = {"model": model, "version": version}
        return ModelMetrics(model, version, self.requests.labels(**labels), self.failures, self.queue_seconds.labels(**labels),
                            self.compute_seconds.labels(**labels), self.batch_size.labels(**labels), self.queue_depth.labels(**labels))

    def text(self) -> bytes:
        return generate_latest(self.registry)
