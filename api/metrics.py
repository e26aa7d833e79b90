"""Prometheus metrics, one registry per app (tests build many apps in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from chatledger.eventstore import AppendResult


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "chatledger_http_requests_total",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "chatledger_http_request_duration_seconds",
            "HTTP request latency by method and route template.",
            ["method", "route"],
            registry=self.registry,
        )
        self.appended = Counter(
            "chatledger_events_appended_total",
            "Events appended to the log by this process, by event type.",
            ["type"],
            registry=self.registry,
        )
        self.store_errors = Counter(
            "chatledger_store_errors_total",
            "Database failures answered with 503, by error class.",
            ["kind"],
            registry=self.registry,
        )

        self.projection_lag = Gauge(
            "chatledger_projection_lag_events",
            "Events an asynchronous projection still has to process (read at scrape time).",
            ["projection"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class AppendCounter:
    """Counts committed events by type: an append listener of the store (idempotent replays and
    failed appends write nothing and are not counted)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def __call__(self, result: AppendResult) -> None:
        for e in result.events:
            self.metrics.appended.labels(type=e.type).inc()
