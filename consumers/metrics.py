"""Prometheus metrics of one destination's consumer process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ConsumerMetrics:
    def __init__(self, destination: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["destination"]

        def counter(name: str, doc: str, extra: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, [*labels, *extra], registry=self.registry)

        self.delivered = counter("postback_hub_delivered", "Activities the partner accepted.")
        self.retried = counter("postback_hub_retried", "Delivery attempts retried in process.")
        self.parked = counter("postback_hub_parked", "Activities parked on a retry topic.")
        self.dead_lettered = counter(
            "postback_hub_dead_lettered", "Activities sent to the dead-letter topic.", ("reason",)
        )
        self.deduplicated = counter(
            "postback_hub_deduplicated", "Activities not sent again: already delivered."
        )
        self.skipped = counter(
            "postback_hub_skipped", "Activities routing kept from this partner.", ("reason",)
        )
        self.delivery_seconds = Histogram(
            "postback_hub_delivery_seconds",
            "Duration of one partner request.",
            labels,
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.end_to_end_seconds = Histogram(
            "postback_hub_end_to_end_seconds",
            "From the callback's receipt to the partner's acceptance.",
            labels,
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.lag = Gauge(
            "postback_hub_consumer_lag",
            "Messages not yet taken, over the assigned partitions.",
            labels,
            registry=self.registry,
        )
        self.breaker_state = Gauge(
            "postback_hub_breaker_state",
            "Circuit breaker: 0 closed, 1 half-open, 2 open.",
            labels,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "postback_hub_deliveries_in_flight",
            "Messages taken and not yet settled.",
            labels,
            registry=self.registry,
        )
        self.destination = destination

    def render(self) -> bytes:
        return generate_latest(self.registry)
