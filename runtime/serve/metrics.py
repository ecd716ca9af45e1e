"""Prometheus metrics of one server (its own registry, so several apps can live in a process)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("cmp_serve_requests", "HTTP requests answered, by endpoint and status code",
                                ["endpoint", "code"], registry=r)
        self.errors = Counter("cmp_serve_errors", "Requests answered with a 4xx or 5xx status, by endpoint and code",
                              ["endpoint", "code"], registry=r)
        self.latency = Histogram("cmp_serve_request_seconds", "Time from request to response, by endpoint",
                                 ["endpoint"], buckets=_LATENCY_BUCKETS, registry=r)
        self.stage = Histogram("cmp_serve_stage_seconds", "Time per stage of a request (audio, vad, fbank, "
                               "features, queue, model, encode, render)", ["stage"], buckets=_LATENCY_BUCKETS,
                               registry=r)
        self.batch_size = Histogram("cmp_serve_batch_size", "Utterances per model batch",
                                    buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self.queue_depth = Gauge("cmp_serve_queue_depth", "Requests waiting for a model batch", registry=r)
        self.inflight = Gauge("cmp_serve_inflight_requests", "Requests admitted and not yet finished", registry=r)

    def observe_stages(self, stages: dict[str, float]) -> None:
        for name, ms in stages.items():
            self.stage.labels(name).observe(ms / 1e3)
