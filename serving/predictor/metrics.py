"""Prometheus metrics, served at TF Serving's path /monitoring/prometheus/metrics.

Each server has its own registry (several servers can live in one process, e.g. in tests).
Model version gauges are computed at scrape time from the model manager, so they never drift.
"""
from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

from serving.predictor.model_manager import ModelManager, State

UNKNOWN_MODEL = "<unknown>"  # keeps label cardinality bounded when clients send random model names


class PredictorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.requests = Counter(
            "predictor_requests", "Predict requests answered, by canonical status code.",
            ["model", "version", "api", "status"], registry=self.registry)
        self.latency = Histogram(
            "predictor_request_latency_seconds", "Predict latency, receipt of a decoded request to result.",
            ["model", "version", "api"], registry=self.registry,
            buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.batch_size = Histogram(
            "predictor_batch_size", "Examples per model call (batching merges requests into one call).",
            ["model", "version"], registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))

    def observe_request(self, model: str, version: str, api: str, status: str, seconds: float) -> None:
        self.requests.labels(model, version, api, status).inc()
        if status == "OK":
            self.latency.labels(model, version, api).observe(seconds)

    def watch(self, manager: ModelManager) -> None:
        self.registry.register(_ModelVersionCollector(manager))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _ModelVersionCollector:
    def __init__(self, manager: ModelManager) -> None:
        self._manager = manager

    def collect(self):
        state = GaugeMetricFamily(
            "predictor_model_version_state",
            "ModelVersionStatus state of each known version (10 START, 20 LOADING, 30 AVAILABLE, "
            "40 UNLOADING, 50 END).", labels=["model", "version"])
        default = GaugeMetricFamily(
            "predictor_model_default_version",
            "Version answering requests that name no version (the highest AVAILABLE).", labels=["model"])
        for model, versions in self._manager.snapshot().items():
            for version, value in versions.items():
                state.add_metric([model, str(version)], int(value))
            available = [v for v, s in versions.items() if s == State.AVAILABLE]
            if available:
                default.add_metric([model], max(available))
        yield state
        yield default
