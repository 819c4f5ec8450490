"""X's attribution decision for each delivered conversion, published to Kafka.

X answers ``conversion_event`` with whether it attributes the conversion to a
campaign (``twitter_attribution``, null when it does not). :func:`decision` reads
that answer (pure); :class:`AttributionPublisher` counts it
(``postback_hub_attributions_total``) and writes it, keyed by the record's
fingerprint, to ``<topic>.<destination>.attributions`` through the runtime's
producer (acks=all), so the message settles only once the decision is stored.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from prometheus_client import Counter

from postback_hub.consumers.metrics import ConsumerMetrics
from postback_hub.service.record import CallbackRecord

ATTRIBUTION_RETENTION_MS = 90 * 86_400_000  # X: attribution data may be kept 90 days


def attribution_topic(source_topic: str, destination: str) -> str:
    return f"{source_topic}.{destination}.attributions"


@dataclass(frozen=True, slots=True)
class Decision:
    """``attributed``: True or False as X said, None when the answer says neither."""

    attributed: bool | None
    data: dict[str, Any]


def decision(body: bytes) -> Decision:
    """X's decision in a ``conversion_event`` answer; an unreadable answer decides nothing."""
    try:
        data = orjson.loads(body).get("data") or {}
    except (orjson.JSONDecodeError, AttributeError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    # X always includes the node, null when X does not claim the conversion; without
    # it the answer says nothing either way.
    attributed = (
        (data["twitter_attribution"] is not None) if "twitter_attribution" in data else None
    )
    return Decision(attributed, data)


class AttributionPublisher:
    """Counts and stores X's decisions; does nothing until :meth:`attach`\\ ed."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self._producer: AIOKafkaProducer | None = None
        self._counted: dict[bool | None, Counter] | None = None

    def topics(self) -> dict[str, dict[str, str]]:
        return {self.topic: {"retention.ms": str(ATTRIBUTION_RETENTION_MS)}}

    def attach(self, producer: AIOKafkaProducer | None, metrics: ConsumerMetrics) -> None:
        """Start publishing with ``producer``; the decisions counter joins the runtime's
        metrics (X's alone: no other destination exports it)."""
        self._producer = producer
        family = Counter(
            "postback_hub_attributions",
            "Delivered conversions by X's attribution decision.",
            ["destination", "attributed"],
            registry=metrics.registry,
        )
        self._counted = {
            True: family.labels(metrics.destination, "true"),
            False: family.labels(metrics.destination, "false"),
            None: family.labels(metrics.destination, "unknown"),
        }

    async def publish(self, record: CallbackRecord, body: bytes) -> asyncio.Future[Any] | None:
        """Count the decision in X's answer ``body`` and send it; the future resolves
        once the broker stored it (None when there is no producer)."""
        found = decision(body)
        if self._counted is not None:
            self._counted[found.attributed].inc()
        if self._producer is None:
            return None
        data = found.data
        value = orjson.dumps(
            {
                "fingerprint": record.fingerprint,
                "app": record.app,
                "activity_kind": record.activity_kind,
                "conversion_type": data.get("conversion_type"),
                "conversion_time": data.get("conversion_time", record.created_at),
                "attributed": found.attributed,
                "twitter_attribution": data.get("twitter_attribution"),
                "tpn_attribution": data.get("tpn_attribution"),
                "recorded_at_ms": time.time_ns() // 1_000_000,
            }
        )
        future: asyncio.Future[Any] = await self._producer.send(
            self.topic, value=value, key=record.fingerprint.encode()
        )
        return future
