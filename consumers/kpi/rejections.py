"""The KPI sink's second input: the receiver's rejection notes, into ``kpi_rejections``.

It runs beside :class:`~postback_hub.consumers.kpi.sink.KpiSink` in the same
process. The notes are few (one per 4xx), so it takes every partition of
``<callbacks topic>.rejections`` itself, without a consumer group, and seeks to
the offsets stored in the database; :func:`~postback_hub.kpi.rejections.write_notes`
fences every batch by those offsets, so two sinks reading the same notes still
count each once. A missing topic (no refusal yet) is waited for quietly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from postback_hub.kpi.rejections import NoteMessage, write_notes
from postback_hub.kpi.store import KpiStore
from postback_hub.service.producer import kafka_client_options
from postback_hub.service.rejections import RejectionNote, rejections_topic
from postback_hub.service.settings import Settings
from postback_hub.service.topics import partitions_of

log = logging.getLogger("postback_hub.consumer")

_TOPIC_POLL_S = 5.0


def read_note(value: bytes | None) -> RejectionNote | None:
    if value is None:
        return None
    try:
        return RejectionNote.from_json(value)
    except ValueError:
        return None


class RejectionSink:
    """Reads rejection notes into the store until stopped (see the module docstring)."""

    def __init__(self, settings: Settings, name: str, store: KpiStore) -> None:
        self.topic = rejections_topic(settings.kafka.topic)
        self.consumer_name = f"{name}.rejections"
        self._options = kafka_client_options(settings)
        self._store = store
        self._stopping = asyncio.Event()
        self.counted = 0

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Until :meth:`stop`; a Kafka failure is logged and the reading starts over."""
        while not self._stopping.is_set():
            try:
                await self._run_once()
            except (KafkaError, OSError) as exc:
                log.warning("rejection notes: reading failed", extra={"error": type(exc).__name__})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), _TOPIC_POLL_S)

    async def _run_once(self) -> None:
        partitions = await self._wait_for_topic()
        if not partitions:
            return
        consumer = AIOKafkaConsumer(**self._options, enable_auto_commit=False, group_id=None)
        await consumer.start()
        try:
            assigned = [TopicPartition(self.topic, p) for p in partitions]
            consumer.assign(assigned)
            stored = await asyncio.to_thread(
                self._store.stored_offsets, self.consumer_name, self.topic
            )
            for tp in assigned:
                if tp.partition in stored:
                    consumer.seek(tp, stored[tp.partition])
                else:
                    await consumer.seek_to_beginning(tp)
            while not self._stopping.is_set():
                batch = await consumer.getmany(timeout_ms=500, max_records=5000)
                messages = [
                    NoteMessage(tp.partition, m.offset, read_note(m.value))
                    for tp, items in batch.items()
                    for m in items
                ]
                if messages:
                    self.counted += await asyncio.to_thread(
                        write_notes, self._store, self.consumer_name, self.topic, messages
                    )
        finally:
            with contextlib.suppress(KafkaError):
                await consumer.stop()

    async def _wait_for_topic(self) -> list[int]:
        while not self._stopping.is_set():
            try:
                partitions = await partitions_of(self._options, self.topic)
            except KafkaError:
                partitions = []
            if partitions:
                return partitions
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), _TOPIC_POLL_S)
        return []
