"""Prometheus metrics of the embedded server (own registry; text format at the monitoring path).

The page starts with TF Serving's own families under TF's names
(``:tensorflow:serving:request_count`` ..., see ``tf_metrics``); the
``nebula_serving_*`` families follow them.

Model names in labels are only those the server serves (anything else counts as
``_unknown``), so random URLs cannot grow the metric set without bound.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from nebula_keras3.serving.tf_metrics import TFMetrics

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.tf = TFMetrics()
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "nebula_serving_requests", "REST requests by model, API and HTTP status",
            ["model", "api", "status"], registry=r)
        self.latency = Histogram(
            "nebula_serving_request_latency_seconds", "REST request latency (body read to response)",
            ["model", "api"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram(
            "nebula_serving_batch_size", "Rows per model call after batching",
            ["model", "version", "signature"], buckets=BATCH_BUCKETS, registry=r)
        self.queue_rows = Gauge(
            "nebula_serving_batch_queue_rows", "Rows waiting in the batch queue when a batch started",
            ["model", "version", "signature"], registry=r)
        self.rejected = Counter(
            "nebula_serving_rejected", "Requests refused before running (overload or limits)",
            ["reason"], registry=r)
        self.inflight = Gauge("nebula_serving_inflight_requests", "REST requests being handled", registry=r)
        self.versions = Gauge(
            "nebula_serving_model_version_available", "1 for each model version being served",
            ["model", "version", "runtime"], registry=r)
        self.images = Counter(
            "nebula_serving_images_generated", "Images produced by predict calls", ["model"], registry=r)

    def render(self) -> bytes:
        return self.tf.render().encode() + generate_latest(self.registry)
