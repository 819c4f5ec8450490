"""Prometheus metrics of the KPI rollup sink; every series carries the destination."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class SinkMetrics:
    def __init__(self, destination: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        labels = ["destination"]

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, labels, registry=registry).labels(destination)

        self.batches = counter("postback_hub_kpi_batches", "Batches written in one transaction.")
        self.rows_written = counter(
            "postback_hub_kpi_rows_written", "Rollup rows inserted or updated."
        )
        self.counted = counter("postback_hub_kpi_counted", "Activities added to the rollups.")
        self.duplicates = counter(
            "postback_hub_kpi_duplicates", "Activities not counted again: fingerprint seen."
        )
        self.already_applied = counter(
            "postback_hub_kpi_already_applied",
            "Messages skipped: below the partition's offset stored in the database.",
        )
        self.unreadable = counter(
            "postback_hub_kpi_unreadable", "Messages that are not a callback record."
        )
        self.batch_seconds = Histogram(
            "postback_hub_kpi_batch_seconds",
            "Duration of one batch's database transaction.",
            labels,
            buckets=_BUCKETS,
            registry=registry,
        ).labels(destination)
        self.lag = Gauge(
            "postback_hub_consumer_lag",
            "Messages not yet written, over the assigned partitions.",
            labels,
            registry=registry,
        ).labels(destination)

    def render(self) -> bytes:
        return generate_latest(self.registry)
