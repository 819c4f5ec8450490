"""How de-dup marks are batched into records (the producer is a stand-in: the log's
behaviour against a real broker is covered by the integration tests)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaConnectionError

from postback_hub.consumers.dedup import MARK_LINGER_S, DedupStore, Seen, StoreClosed


class RecordingProducer:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[int, list[list[str]]]] = []
        self.fail = fail

    async def send_and_wait(self, topic: str, *, value: bytes, partition: int) -> None:
        await asyncio.sleep(0)
        if self.fail:
            raise KafkaConnectionError("broker gone")
        self.sent.append((partition, orjson.loads(value)["e"]))


def store(producer: RecordingProducer) -> DedupStore:
    return DedupStore({}, "callbacks.partner.dedup", 3600, producer)


async def test_marks_nobody_waits_for_go_out_together_one_record_per_partition() -> None:
    producer = RecordingProducer()
    dedup = store(producer)
    futures: list[Any] = [
        dedup.mark_soon(0, "fp-a", Seen.DELIVERED),
        dedup.mark_soon(1, "fp-b", Seen.DELIVERED),
        dedup.mark_soon(0, "fp-c", Seen.DELIVERED),
    ]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert producer.sent == []  # lingering, not written per loop turn
    assert not any(f.done() for f in futures)  # so nothing may be settled yet
    await asyncio.wait_for(asyncio.gather(*futures), timeout=5)
    assert sorted(producer.sent) == [(0, [["fp-a", "d"], ["fp-c", "d"]]), (1, [["fp-b", "d"]])]
    # Known in memory at once, before the write.
    assert dedup.lookup(0, "fp-a") is Seen.DELIVERED


async def test_an_awaited_mark_takes_what_is_buffered_along_without_waiting() -> None:
    producer = RecordingProducer()
    dedup = store(producer)
    lingering = dedup.mark_soon(0, "fp-a", Seen.DELIVERED)
    assert lingering is not None
    await dedup.mark(0, "fp-b", Seen.PENDING)
    assert producer.sent == [(0, [["fp-a", "d"], ["fp-b", "p"]])]
    await asyncio.sleep(0)
    assert lingering.done()
    await dedup.close()
    assert producer.sent == [(0, [["fp-a", "d"], ["fp-b", "p"]])]  # nothing written twice


async def test_close_writes_what_is_buffered() -> None:
    producer = RecordingProducer()
    dedup = store(producer)
    lingering = dedup.mark_soon(3, "fp-a", Seen.DELIVERED)
    await dedup.close()
    assert lingering is not None
    assert lingering.done()
    assert producer.sent == [(3, [["fp-a", "d"]])]


async def test_a_failed_write_fails_every_mark_it_carried() -> None:
    dedup = store(RecordingProducer(fail=True))
    lingering = dedup.mark_soon(0, "fp-a", Seen.DELIVERED)
    with pytest.raises(KafkaConnectionError):
        await dedup.mark(0, "fp-b", Seen.PENDING)
    assert lingering is not None
    with pytest.raises(KafkaConnectionError):
        await lingering


async def test_a_mark_after_close_fails_at_once_and_writes_nothing() -> None:
    producer = RecordingProducer()
    dedup = store(producer)
    await dedup.close()
    late = dedup.mark_soon(0, "fp-late", Seen.DELIVERED)
    assert late is not None
    assert late.done()
    with pytest.raises(StoreClosed):
        late.result()
    with pytest.raises(StoreClosed):
        await dedup.mark(0, "fp-late-awaited", Seen.PENDING)
    await asyncio.sleep(MARK_LINGER_S * 3)
    assert producer.sent == []  # no timer was armed to write through a stopped producer


async def test_flush_writes_what_is_buffered_and_the_store_stays_open() -> None:
    producer = RecordingProducer()
    dedup = store(producer)
    lingering = dedup.mark_soon(1, "fp-a", Seen.DELIVERED)
    await dedup.flush()
    assert lingering is not None
    assert lingering.done()
    assert not dedup.closed
    await dedup.mark(1, "fp-b", Seen.PENDING)  # still accepted and written
    assert producer.sent == [(1, [["fp-a", "d"]]), (1, [["fp-b", "p"]])]
    await dedup.close()
    assert dedup.closed
