"""Prometheus metrics of the receiver.

Each receiver process updates its own values; when several processes share a
port, ``PROMETHEUS_MULTIPROC_DIR`` (set by the supervisor before the workers
start) makes any one of them able to answer ``/metrics`` for all.

Answer counts and the in-flight gauge are counted in plain Python per request and
folded into prometheus_client when scraped and once a second: each of its updates
takes a lock (and writes a shared file with several workers), 3 to 10 us per
callback in all. So another worker's latest second may be missing from a scrape;
this process's own figures are always current.
"""

from __future__ import annotations

import asyncio
import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from postback_hub.service.fields import KNOWN_ACTIVITY_KINDS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FOLD_EVERY_S = 1.0


def kind_label(kind: str | None) -> str:
    """Bounded label values: an attacker must not be able to mint time series."""
    if kind is None:
        return "none"
    return kind if kind in KNOWN_ACTIVITY_KINDS else "other"


class LiveCount:
    """A gauge's value kept as a plain number (requests in flight), exported when folded."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self) -> None:
        self.value += 1

    def dec(self) -> None:
        self.value -= 1


class ReceiverMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "postback_hub_requests",
            "Callback requests answered, by app, activity kind and HTTP status.",
            ["app", "kind", "status"],
            registry=self.registry,
        )
        self.produce_seconds = Histogram(
            "postback_hub_produce_seconds",
            "Time from handing a record to the producer to the broker's acks=all.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.broker_errors = Counter(
            "postback_hub_broker_errors",
            "Produce attempts that failed, by reason.",
            ["reason"],
            registry=self.registry,
        )
        for reason in ("not_connected", "timeout"):  # at 0 before the first error
            self.broker_errors.labels(reason)
        self._inflight_gauge = Gauge(
            "postback_hub_inflight_requests",
            "Callback requests being handled now.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.inflight = LiveCount()
        # Bound children by label values: labels() takes a lock and builds a key per call.
        self._answered: dict[tuple[str, str, int], Counter] = {}
        self._unfolded: dict[tuple[str, str, int], int] = {}
        self._fold_timer: asyncio.TimerHandle | None = None

    def answered(self, app: str, kind: str | None, status: int) -> None:
        """Count one answered callback request; ``app`` must already be a bounded label."""
        key = (app, kind_label(kind), status)
        unfolded = self._unfolded
        unfolded[key] = unfolded.get(key, 0) + 1
        if self._fold_timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # counted outside a loop (a tool, a test): folded when read
                return
            self._fold_timer = loop.call_later(FOLD_EVERY_S, self._tick)

    def _tick(self) -> None:
        # Re-armed by the next answer, so an idle receiver has no timer.
        self._fold_timer = None
        self.fold()

    def fold(self) -> None:
        """Hand what was counted since the last fold to prometheus_client."""
        unfolded, self._unfolded = self._unfolded, {}
        for (app, label, status), count in unfolded.items():
            child = self._answered.get((app, label, status))
            if child is None:
                child = self._answered[(app, label, status)] = self.requests.labels(
                    app, label, str(status)
                )
            child.inc(count)
        self._inflight_gauge.set(self.inflight.value)

    def render(self) -> bytes:
        self.fold()
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if directory:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
