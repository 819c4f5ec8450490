"""The KPI rollup sink: the callbacks topic in batches, into the KPI store, exactly once.

As Kafka Connect sinks do, the sink keeps its consumed offsets in its own
database, written in the same transaction as the rollup deltas
(:meth:`~postback_hub.kpi.store.KpiStore.write_batch`); on every partition
assignment it seeks to the offsets stored there. Kafka's committed offsets are
written afterwards only so that lag tools see the group's progress; they are
never read. A crash, a rebalance or a replay therefore neither loses nor
double-counts a callback: what the database holds is exactly what it counted.

Lifecycle: ``start`` (open the store, ensure the topic, join the group),
``run`` (until ``stop``; raises on a fatal error), ``close(grace_s)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from postback_hub.consumers.kpi.config import KpiDestination
from postback_hub.consumers.kpi.metrics import SinkMetrics
from postback_hub.consumers.kpi.rejections import RejectionSink
from postback_hub.kpi.store import BatchResult, Consumed, KpiStore
from postback_hub.service.producer import kafka_client_options
from postback_hub.service.record import CallbackRecord
from postback_hub.service.settings import Settings
from postback_hub.service.topics import ensure_topic, partitions_of

log = logging.getLogger("postback_hub.consumer")

_READY_POLL_S = 15.0


def read_message(message: ConsumerRecord[bytes, bytes]) -> CallbackRecord | None:
    """The callback record a message holds, or None when it is not one (never counted)."""
    if message.value is None:
        return None
    try:
        return CallbackRecord.from_json(message.value)
    except (orjson.JSONDecodeError, ValueError, KeyError, TypeError, ArithmeticError):
        return None


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, sink: KpiSink) -> None:
        self._sink = sink

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        # A batch being written finishes first: its transaction is fenced by the stored
        # offsets anyway, so this only saves the next owner from fetching it again.
        async with self._sink._writing:
            pass

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self._sink._seek_to_stored(set(assigned))


class KpiSink:
    """One ``kpi`` destination's consumer (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        name: str,
        config: KpiDestination,
        *,
        database_url: str | None = None,
        metrics: SinkMetrics | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.config = config
        self.metrics = metrics or SinkMetrics(name)
        self.topic = settings.kafka.topic
        self.group_id = f"postback-hub.{name}"
        self._database_url = database_url or settings.kpi.database_url
        self._options = kafka_client_options(settings)
        self._store: KpiStore | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._stopping = asyncio.Event()
        self._writing = asyncio.Lock()
        self._last_poll = 0.0
        # Per partition, one past the last message fetched (for the lag gauge).
        self._positions: dict[TopicPartition, int] = {}
        # The receiver's 4xx notes, counted beside the rollups (for reconciliation).
        self.rejections: RejectionSink | None = None
        self._rejections_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._store = await asyncio.to_thread(KpiStore.open, self._database_url)
        if not self.config.dry_run:
            self.rejections = RejectionSink(self.settings, self.name, self._store)
        await self._wait_for_topic()
        self._consumer = AIOKafkaConsumer(
            **self._options,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset=self.config.start_from,
            max_poll_records=self.config.batch_size,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=2_000,
        )
        self._consumer.subscribe([self.topic], listener=_Listener(self))
        await self._consumer.start()
        log.info(
            "kpi sink started",
            extra={"destination": self.name, "group": self.group_id, "store": self.backend},
        )

    @property
    def backend(self) -> str:
        return "" if self._store is None else self._store.backend

    async def _wait_for_topic(self) -> None:
        kafka = self.settings.kafka
        while not await partitions_of(self._options, kafka.topic):
            if kafka.create_topic:
                partitions, replicas = kafka.topic_partitions, kafka.topic_replication_factor
                await ensure_topic(self._options, kafka.topic, partitions, replicas)
                return
            log.warning("waiting for the callbacks topic to exist", extra={"topic": kafka.topic})
            await asyncio.sleep(2.0)

    async def _seek_to_stored(self, assigned: set[TopicPartition]) -> None:
        consumer, store = self._consumer, self._store
        assert consumer is not None
        assert store is not None
        stored = await asyncio.to_thread(store.stored_offsets, self.name, self.topic)
        fresh: list[TopicPartition] = []
        for tp in assigned:
            if tp.partition in stored:
                consumer.seek(tp, stored[tp.partition])
            else:
                fresh.append(tp)
        if fresh:
            # Never Kafka's committed offset: the database may have been replaced.
            if self.config.start_from == "earliest":
                await consumer.seek_to_beginning(*fresh)
            else:
                await consumer.seek_to_end(*fresh)

    def stop(self) -> None:
        self._stopping.set()

    @property
    def ready(self) -> bool:
        return (
            self._consumer is not None
            and not self._stopping.is_set()
            and time.monotonic() - self._last_poll < _READY_POLL_S
        )

    def render_metrics(self) -> bytes:
        return self.metrics.render()

    async def run(self) -> None:
        """Fetch a batch, write it in one transaction, repeat until :meth:`stop`."""
        consumer = self._consumer
        assert consumer is not None
        wait_ms = int(self.config.max_batch_wait_s * 1000)
        stopping = asyncio.ensure_future(self._stopping.wait())
        if self.rejections is not None and self._rejections_task is None:
            self._rejections_task = asyncio.create_task(self.rejections.run())
        try:
            while not self._stopping.is_set():
                self._last_poll = time.monotonic()
                fetch = asyncio.ensure_future(
                    consumer.getmany(timeout_ms=wait_ms, max_records=self.config.batch_size)
                )
                await asyncio.wait({fetch, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not fetch.done():
                    fetch.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await fetch
                    break
                batch = fetch.result()
                if batch:
                    await self._write(batch)
                self._update_lag()
        finally:
            stopping.cancel()

    async def _write(self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        store = self._store
        assert store is not None
        consumed = [
            Consumed(tp.partition, message.offset, read_message(message))
            for tp, messages in batch.items()
            for message in messages
        ]
        for tp, messages in batch.items():
            self._positions[tp] = messages[-1].offset + 1
        if self.config.dry_run:
            log.info(
                "dry run: batch not written",
                extra={"destination": self.name, "messages": len(consumed)},
            )
            return
        async with self._writing:
            started = time.perf_counter()
            result = await asyncio.to_thread(
                store.write_batch, self.name, self.topic, consumed, self.config.dedup_window_s
            )
            self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self._count(result, consumed)
        await self._commit_to_kafka(result)

    def _count(self, result: BatchResult, consumed: list[Consumed]) -> None:
        metrics = self.metrics
        metrics.batches.inc()
        metrics.rows_written.inc(result.rows)
        metrics.counted.inc(result.counted)
        metrics.duplicates.inc(result.duplicates)
        metrics.already_applied.inc(result.already_applied)
        if result.unreadable:
            metrics.unreadable.inc(result.unreadable)
            unreadable = [(c.partition, c.offset) for c in consumed if c.record is None]
            # Positions only: the payload may hold device ids.
            log.warning(
                "messages that are not callback records were skipped",
                extra={"destination": self.name, "positions": unreadable[:20]},
            )

    async def _commit_to_kafka(self, result: BatchResult) -> None:
        """For lag monitoring only; a failure here loses nothing (the database has it)."""
        consumer = self._consumer
        assert consumer is not None
        assigned = consumer.assignment()
        offsets: dict[TopicPartition, Any] = {}
        for partition, offset in result.offsets.items():
            tp = TopicPartition(self.topic, partition)
            if tp in assigned:
                offsets[tp] = OffsetAndMetadata(offset, "")
        if not offsets:
            return
        with contextlib.suppress(KafkaError):
            await consumer.commit(offsets)

    def _update_lag(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        lag = 0
        for tp in consumer.assignment():
            highwater, position = consumer.highwater(tp), self._positions.get(tp)
            if highwater is not None and position is not None:
                lag += max(0, highwater - position)
        self.metrics.lag.set(lag)

    async def close(self, grace_s: float = 10.0) -> None:
        """Let a batch being written finish (bounded), then disconnect."""
        self._stopping.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_s):
                async with self._writing:
                    pass
        if self.rejections is not None and self._rejections_task is not None:
            self.rejections.stop()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(grace_s):
                    await self._rejections_task
        if self._consumer is not None:
            with contextlib.suppress(KafkaError):
                await self._consumer.stop()
        if self._store is not None:
            await asyncio.to_thread(self._store.close)
        log.info("kpi sink stopped", extra={"destination": self.name})
