"""Shutdown and de-dup records that failed to write: they get another chance while the
producer still runs, and an offset is committed past a message only once its record is
stored. (The producer and the consumer are stand-ins; the runtime against a real broker
is covered by the integration and fault tests.)"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import ConsumerRecord

from postback_hub.consumers.dedup import DedupStore, Seen
from postback_hub.consumers.runtime.commit import Committer
from postback_hub.consumers.runtime.marks import MarkRepair, finish_marks
from tests.support import callback_record


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


class Parts:
    """The commit step, the de-dup store and the mark repair, wired as the runtime does."""

    def __init__(self, producer: FlakyProducer) -> None:
        self.consumer = RecordingConsumer()
        self.committer = Committer(self.consumer)
        self.dedup = DedupStore({}, "callbacks.bia.dedup", 3600, producer)
        self.tp = TopicPartition("callbacks", 0)
        self.repair = MarkRepair(self.dedup, self.committer, lambda tp: tp == self.tp, 0.05)
        record = callback_record(1, 1_700_000_000)
        self.message: ConsumerRecord[bytes, bytes] = ConsumerRecord(
            self.tp.topic, 0, 5, 0, 0, b"key", record.to_json(), None, 3, 100, ()
        )
        self.committer.register(self.tp, self.message.offset)
        # What the runtime does once the partner accepted it: settle when the mark is stored.
        mark = self.dedup.mark_soon(0, record.fingerprint, Seen.DELIVERED)
        assert mark is not None
        self.committer.settle_when(
            self.tp, self.message.offset, mark, lambda: self.repair.repair(self.tp, self.message)
        )


async def test_a_failed_record_written_again_at_shutdown_lets_the_offset_move() -> None:
    # The flush at shutdown fails, and so does the first re-write: the second lands
    # within the grace period, while the producer still runs.
    producer = FlakyProducer(failures=2)
    parts = Parts(producer)
    await finish_marks(parts.dedup, parts.committer, grace_s=3.0)
    assert producer.written == [0]
    assert parts.consumer.committed == [{parts.tp: 6}]  # past the message: its record is stored


async def test_a_record_that_cannot_be_written_keeps_the_offset_and_close_is_bounded() -> None:
    producer = FlakyProducer(failures=-1)
    parts = Parts(producer)
    await asyncio.wait_for(finish_marks(parts.dedup, parts.committer, grace_s=0.3), timeout=30)
    assert producer.written == []
    # Never past the message: after a restart it comes back, and nothing is lost.
    assert all(offsets[parts.tp] <= 5 for offsets in parts.consumer.committed)


async def test_a_re_write_stops_once_the_store_is_closed() -> None:
    producer = FlakyProducer(failures=-1)
    parts = Parts(producer)
    await parts.dedup.close()
    # Still assigned, so only the closed store can end it (instead of retrying forever).
    await asyncio.wait_for(parts.repair.repair(parts.tp, parts.message), timeout=5)
    assert parts.committer.pending(parts.tp) == 1  # not settled


async def test_a_frozen_committer_commits_only_what_was_settled_before() -> None:
    consumer = RecordingConsumer()
    committer = Committer(consumer)
    tp = TopicPartition("callbacks", 0)
    for offset in (10, 11, 12):
        committer.register(tp, offset)
    committer.settle(tp, 10)
    committer.freeze()  # the dead-letter limit was reached at offset 11
    committer.settle(tp, 11)
    committer.settle(tp, 12)
    await committer.commit()
    await committer.commit()
    assert consumer.committed == [{tp: 11}]
