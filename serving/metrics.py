"""Prometheus metrics of the scoring service.

Each app gets its own ``CollectorRegistry`` (not the process-global default),
so several apps in one test process do not collide and nothing is registered
at import time.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075,
                   0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PROBABILITY_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))


class ServiceMetrics:
    """Request counts, latency histograms and the distribution of scores served."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "churnlens_http_requests_total", "HTTP requests by route template and status",
            ["method", "route", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "churnlens_http_request_duration_seconds", "Time to answer a request",
            ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.churn_probability = Histogram(
            "churnlens_churn_probability", "Churn probabilities served",
            buckets=PROBABILITY_BUCKETS, registry=self.registry,
        )
        self.scores = Counter(
            "churnlens_scores_total", "Customers scored, by risk tier and value segment",
            ["risk_tier", "value_segment"], registry=self.registry,
        )
        self.model_info = Gauge(
            "churnlens_model_info", "The model being served (value 1)",
            ["name", "version", "alias"], registry=self.registry,
        )
        self.model_swaps = Counter(
            "churnlens_model_swaps_total", "Times a new model version was swapped in",
            registry=self.registry,
        )
        self.model_swap_failures = Counter(
            "churnlens_model_swap_failures_total",
            "Times a new model version failed to load or warm up (the old one kept serving)",
            registry=self.registry,
        )

    def observe_request(self, *, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def observe_scores(self, records: Iterable[Any]) -> None:
        """Record what was served: probability histogram and tier × segment counts."""
        for record in records:
            probability = getattr(record, "churn_probability", None)
            if probability is not None:
                self.churn_probability.observe(probability)
            self.scores.labels(record.risk_tier, record.value_segment).inc()

    def set_model(self, *, name: str, version: str, alias: str | None) -> None:
        self.model_info.clear()
        self.model_info.labels(name, version, alias or "").set(1)
