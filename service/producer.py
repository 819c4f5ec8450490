"""The receiver's Kafka producer: durable acks, a bounded wait, and self-recovery.

A 2xx to Adjust means the callback is on Kafka with ``acks=all``. If the broker
cannot take it within ``produce_timeout_s`` the caller gets
:class:`BrokerUnavailable` and answers 503, which Adjust retries. The producer
connects in the background, so the receiver starts (and reports not-ready)
while the broker is down, and reconnects by itself when it comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from postback_hub.service.deadlines import Deadlines
from postback_hub.service.metrics import ReceiverMetrics
from postback_hub.service.partitioner import KeyPartitioner
from postback_hub.service.settings import KafkaSettings, Settings
from postback_hub.service.topics import ensure_topic

log = logging.getLogger("postback_hub.producer")

_CONNECT_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)
_PROBE_CACHE_S = 1.0


class BrokerUnavailable(Exception):
    """The broker did not acknowledge in time; the callback may or may not be stored."""


class RecordTooLarge(Exception):
    """The broker will never take a record this large: a permanent refusal, not an outage."""


@dataclass(frozen=True, slots=True)
class Acknowledged:
    partition: int
    offset: int


def kafka_client_options(settings: Settings) -> dict[str, Any]:
    """Connection options shared by every Kafka client this project creates."""
    kafka = settings.kafka
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "client_id": kafka.client_id,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.sasl_mechanism is not None:
        options["sasl_mechanism"] = kafka.sasl_mechanism
        if kafka.sasl_username is None or kafka.sasl_password is None:
            raise ValueError("kafka.sasl_mechanism needs sasl_username and sasl_password")
        options["sasl_plain_username"] = kafka.sasl_username.reveal()
        options["sasl_plain_password"] = kafka.sasl_password.reveal()
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        options["ssl_context"] = create_ssl_context()
    return options


class CallbackProducer:
    """Owns one ``AIOKafkaProducer`` for the life of a receiver process."""

    def __init__(self, settings: Settings, metrics: ReceiverMetrics) -> None:
        self._settings = settings
        self._kafka: KafkaSettings = settings.kafka
        self._metrics = metrics
        self._producer: AIOKafkaProducer | None = None
        self._connector: asyncio.Task[None] | None = None
        self._probe_at = 0.0
        self._probe_ok = False
        self._deadlines = Deadlines(self._kafka.produce_timeout_s)

    @property
    def connected(self) -> bool:
        return self._producer is not None

    @property
    def client(self) -> AIOKafkaProducer | None:
        """The connected aiokafka producer (None until connected), for side writes that
        must never delay an answer (see :mod:`postback_hub.service.rejections`)."""
        return self._producer

    def start(self) -> None:
        """Begin connecting in the background; returns at once."""
        self._connector = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        attempt = 0
        while True:
            producer = AIOKafkaProducer(
                **kafka_client_options(self._settings),
                acks="all",
                enable_idempotence=True,
                linger_ms=self._kafka.linger_ms,
                # The broker-side bound; our own wait is produce_timeout_s.
                request_timeout_ms=max(int(self._kafka.produce_timeout_s * 1000), 5000),
                max_request_size=self._kafka.max_record_bytes + 64 * 1024,
                # aiokafka's default placement with a compiled murmur2 (about 10 us less).
                partitioner=KeyPartitioner(),
            )
            try:
                await producer.start()
                if self._kafka.create_topic:
                    await ensure_topic(
                        kafka_client_options(self._settings),
                        self._kafka.topic,
                        self._kafka.topic_partitions,
                        self._kafka.topic_replication_factor,
                    )
            except asyncio.CancelledError:
                # Closed while connecting: release the half-started client before leaving.
                with contextlib.suppress(Exception):
                    await producer.stop()
                raise
            except Exception as exc:
                # Whatever failed, keep trying: a receiver that gave up connecting would
                # answer 503 forever while looking alive.
                with contextlib.suppress(Exception):
                    await producer.stop()
                delay = _CONNECT_BACKOFF_S[min(attempt, len(_CONNECT_BACKOFF_S) - 1)]
                attempt += 1
                log.warning(
                    "kafka not reachable yet",
                    extra={"error": type(exc).__name__, "retry_in_s": delay},
                )
                await asyncio.sleep(delay)
                continue
            self._producer = producer
            self._probe_ok, self._probe_at = True, time.monotonic()
            log.info("kafka producer connected", extra={"topic": self._kafka.topic})
            return

    async def wait_connected(self, timeout: float) -> None:
        """Wait until the first connection is made (start-up checks and tests)."""
        deadline = time.monotonic() + timeout
        while self._producer is None:
            if time.monotonic() > deadline:
                raise TimeoutError("the producer did not connect to Kafka in time")
            await asyncio.sleep(0.05)

    async def produce(self, key: bytes, value: bytes) -> Acknowledged:
        """Send and wait for ``acks=all``; raise :class:`BrokerUnavailable` past the bound."""
        producer = self._producer
        if producer is None:
            self._metrics.broker_errors.labels("not_connected").inc()
            raise BrokerUnavailable("not connected to Kafka yet")
        started = time.perf_counter()
        try:
            # One timer for every request's bound, not one per request (service/deadlines.py).
            with self._deadlines.bound():
                metadata = await producer.send_and_wait(self._kafka.topic, value=value, key=key)
        except TimeoutError:
            self._metrics.broker_errors.labels("timeout").inc()
            self._probe_ok = False
            raise BrokerUnavailable("Kafka did not acknowledge in time") from None
        except MessageSizeTooLargeError:
            self._metrics.broker_errors.labels("MessageSizeTooLargeError").inc()
            raise RecordTooLarge() from None
        except KafkaError as exc:
            self._metrics.broker_errors.labels(type(exc).__name__).inc()
            self._probe_ok = False
            raise BrokerUnavailable(f"Kafka refused the record: {type(exc).__name__}") from None
        self._metrics.produce_seconds.observe(time.perf_counter() - started)
        self._probe_ok, self._probe_at = True, time.monotonic()
        return Acknowledged(metadata.partition, metadata.offset)

    async def ready(self) -> bool:
        """Can we produce now? A metadata round trip, cached for a second."""
        producer = self._producer
        if producer is None:
            return False
        if time.monotonic() - self._probe_at < _PROBE_CACHE_S:
            return self._probe_ok
        try:
            await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout=2.0)
            self._probe_ok = True
        except (KafkaError, OSError, TimeoutError):
            self._probe_ok = False
        self._probe_at = time.monotonic()
        return self._probe_ok

    async def close(self) -> None:
        """Stop connecting, flush what is buffered, and close."""
        if self._connector is not None:
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connector
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        self._deadlines.close()
