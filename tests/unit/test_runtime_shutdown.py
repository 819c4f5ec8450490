"""Shutdown and de-dup records that failed to write: they get another chance while the
producer still runs, and an offset is committed past a message only once its record is
stored. (The producer and the consumer are stand-ins; the runtime against a real broker
is covered by the integration and fault tests.)"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import ConsumerRecord

from postback_hub.consumers import runtime as runtime_module
from postback_hub.consumers.dedup import DedupStore, Seen
from postback_hub.consumers.registry import default_registry
from postback_hub.consumers.runtime import DeliveryRuntime
from tests.support import callback_record, make_settings, module_destination


class FlakyProducer:
    """Fails the first ``failures`` writes (all of them when negative)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.written: list[int] = []

    async def send_and_wait(self, topic: str, *, value: bytes, partition: int) -> None:
        await asyncio.sleep(0)
        if self.failures != 0:
            self.failures -= 1
            raise KafkaConnectionError("broker gone")
        self.written.append(partition)


class RecordingConsumer:
    def __init__(self) -> None:
        self.committed: list[dict[TopicPartition, int]] = []

    async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        self.committed.append({tp: meta.offset for tp, meta in offsets.items()})

    async def stop(self) -> None:
        pass


async def _runtime_with_one_delivered_message(
    producer: FlakyProducer,
) -> tuple[DeliveryRuntime, RecordingConsumer, TopicPartition, ConsumerRecord[bytes, bytes]]:
    settings = make_settings(
        "127.0.0.1:9", "callbacks", 0, {"bia": module_destination("https://partner.test")}
    )
    runtime = default_registry().build(settings, "bia")
    assert isinstance(runtime, DeliveryRuntime)
    consumer = RecordingConsumer()
    runtime._consumer = consumer
    runtime._dedup = DedupStore({}, "callbacks.bia.dedup", 3600, producer)
    tp = TopicPartition(settings.kafka.topic, 0)
    runtime._assigned.add(tp)
    record = callback_record(1, 1_700_000_000)
    message: ConsumerRecord[bytes, bytes] = ConsumerRecord(
        tp.topic, 0, 5, 0, 0, b"key", record.to_json(), None, 3, 100, ()
    )
    runtime._tracker.register(tp, message.offset)
    # What _handle does once the partner accepted it: settle when the record is stored.
    mark = runtime._dedup.mark_soon(0, record.fingerprint, Seen.DELIVERED)
    assert mark is not None
    mark.add_done_callback(lambda done: runtime._settle_when_durable(tp, message, done))
    return runtime, consumer, tp, message


async def test_a_failed_record_written_again_at_shutdown_lets_the_offset_move(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime_module, "_PRODUCE_RETRY_S", 0.05)
    # The flush at shutdown fails, and so does the first re-write: the second lands
    # within the grace period, while the producer still runs.
    producer = FlakyProducer(failures=2)
    runtime, consumer, tp, _message = await _runtime_with_one_delivered_message(producer)
    await runtime.close(grace_s=1.0)
    assert producer.written == [0]
    assert consumer.committed == [{tp: 6}]  # past the message: its record is stored


async def test_a_record_that_cannot_be_written_keeps_the_offset_and_close_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime_module, "_REWRITE_GRACE_S", 0.3)
    monkeypatch.setattr(runtime_module, "_PRODUCE_RETRY_S", 0.05)
    producer = FlakyProducer(failures=-1)
    runtime, consumer, tp, _message = await _runtime_with_one_delivered_message(producer)
    await asyncio.wait_for(runtime.close(grace_s=1.0), timeout=30)
    assert producer.written == []
    # Never past the message: after a restart it comes back, and nothing is lost.
    assert all(offsets[tp] <= 5 for offsets in consumer.committed)


async def test_a_re_write_stops_once_the_store_is_closed() -> None:
    producer = FlakyProducer(failures=-1)
    runtime, _consumer, tp, message = await _runtime_with_one_delivered_message(producer)
    assert runtime._dedup is not None
    await runtime._dedup.close()
    # Still assigned, so only the closed store can end it (instead of retrying forever).
    await asyncio.wait_for(runtime._rewrite_delivered(tp, message), timeout=5)
    assert runtime._tracker.pending(tp) == 1  # not settled
