"""Prometheus metrics of one destination's consumer process.

Every series carries the destination's name; the children are bound once here
so the per-message path does no label lookups.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


# The dead-letter reasons the runtime itself gives (destinations add their own).
RUNTIME_DEAD_LETTER_REASONS = (
    "mapping_error",
    "undecodable_record",
    "expired",
    "internal_error",
)


class ConsumerMetrics:
    def __init__(self, destination: str) -> None:
        self.destination = destination
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        by_destination = ["destination"]

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, by_destination, registry=registry).labels(destination)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, by_destination, registry=registry).labels(destination)

        def histogram(name: str, doc: str) -> Histogram:
            family = Histogram(name, doc, by_destination, buckets=_BUCKETS, registry=registry)
            return family.labels(destination)

        self.delivered = counter("postback_hub_delivered", "Activities the partner accepted.")
        self.dry_run = counter(
            "postback_hub_dry_run", "Activities logged instead of sent (dry run)."
        )
        self.retried = counter("postback_hub_retried", "Delivery attempts retried in process.")
        self.parked = counter("postback_hub_parked", "Activities parked on a retry topic.")
        self.deduplicated = counter(
            "postback_hub_deduplicated", "Activities not sent again: already delivered."
        )
        self._dead_lettered = Counter(
            "postback_hub_dead_lettered",
            "Activities sent to the dead-letter topic, by reason.",
            [*by_destination, "reason"],
            registry=registry,
        )
        self._skipped = Counter(
            "postback_hub_skipped",
            "Activities routing kept from this partner, by reason.",
            [*by_destination, "reason"],
            registry=registry,
        )
        self.delivery_seconds = histogram(
            "postback_hub_delivery_seconds", "Duration of one partner request."
        )
        self.end_to_end_seconds = histogram(
            "postback_hub_end_to_end_seconds",
            "From the callback's receipt to the partner's acceptance.",
        )
        self.lag = gauge(
            "postback_hub_consumer_lag", "Messages not yet taken, over the assigned partitions."
        )
        self.breaker_state = gauge(
            "postback_hub_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open."
        )
        self.in_flight = gauge(
            "postback_hub_deliveries_in_flight", "Messages taken and not yet settled."
        )

        # Exported at 0 from the start, so a rate or an alert has a series before the
        # first error (partner-specific reasons appear when they first happen).
        for reason in RUNTIME_DEAD_LETTER_REASONS:
            self._dead_lettered.labels(destination, reason)

    def dead_lettered(self, reason: str) -> None:
        self._dead_lettered.labels(self.destination, reason).inc()

    def skipped(self, reason: str) -> None:
        self._skipped.labels(self.destination, reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
