"""Which activities a destination already received, kept in Kafka so it survives crashes.

The state is a compacted changelog topic co-partitioned with the callbacks topic:
partition p of the changelog holds the fingerprints seen on partition p (of the
callbacks topic and of the destination's retry topics, which are parked by
partition). When a consumer is assigned partition p it reads changelog
partition p from the start before handling any message of p, so the state
follows the partition through rebalances and restarts.

A record is written (acks=all) before the message's offset can be committed:
- ``delivered``: the partner has it; a later copy is skipped.
- ``pending`` (destinations that must never post twice): written just before a
  request goes out and cleared after a definite answer. Finding ``pending``
  after a restart means the process died with the request in flight: ambiguous.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from enum import Enum
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition


class Seen(Enum):
    DELIVERED = "d"
    PENDING = "p"


class DedupStore:
    def __init__(
        self,
        client_options: dict[str, Any],
        topic: str,
        window_s: float,
        producer: AIOKafkaProducer,
    ) -> None:
        self._options = client_options
        self.topic = topic
        self._window_ms = int(window_s * 1000)
        self._producer = producer
        self._state: dict[int, dict[str, tuple[Seen, int]]] = {}

    @property
    def enabled(self) -> bool:
        return self._window_ms > 0

    def size(self) -> int:
        return sum(len(entries) for entries in self._state.values())

    async def restore(self, partitions: Iterable[int]) -> None:
        """Load the changelog of ``partitions`` (from its beginning to its current end)."""
        wanted = sorted(set(partitions) - set(self._state))
        if not wanted or not self.enabled:
            for partition in wanted:
                self._state[partition] = {}
            return
        consumer = AIOKafkaConsumer(**self._options, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(self.topic, p) for p in wanted]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            states: dict[int, dict[str, tuple[Seen, int]]] = {p: {} for p in wanted}
            horizon = _now_ms() - self._window_ms
            remaining = {tp for tp in tps if ends[tp] > 0}
            while remaining:
                batch = await consumer.getmany(*remaining, timeout_ms=500)
                for tp, messages in batch.items():
                    entries = states[tp.partition]
                    for message in messages:
                        if message.key is None:
                            continue
                        fingerprint = message.key.decode()
                        if message.value is None:
                            entries.pop(fingerprint, None)
                            continue
                        value = orjson.loads(message.value)
                        if value["t"] >= horizon:
                            entries[fingerprint] = (Seen(value["s"]), value["t"])
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
            self._state.update(states)
        finally:
            await consumer.stop()

    def forget(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self._state.pop(partition, None)

    def lookup(self, partition: int, fingerprint: str) -> Seen | None:
        if not self.enabled:
            return None
        entry = self._state.get(partition, {}).get(fingerprint)
        if entry is None or entry[1] < _now_ms() - self._window_ms:
            return None
        return entry[0]

    async def mark(self, partition: int, fingerprint: str, seen: Seen) -> None:
        """Record durably (acks=all) that ``fingerprint`` is ``seen`` on ``partition``."""
        if not self.enabled:
            return
        stamp = _now_ms()
        value = orjson.dumps({"s": seen.value, "t": stamp})
        await self._producer.send_and_wait(
            self.topic, value=value, key=fingerprint.encode(), partition=partition
        )
        self._state.setdefault(partition, {})[fingerprint] = (seen, stamp)

    async def clear(self, partition: int, fingerprint: str) -> None:
        """Remove a ``pending`` mark once the answer was definite (a tombstone)."""
        if not self.enabled:
            return
        await self._producer.send_and_wait(
            self.topic, value=None, key=fingerprint.encode(), partition=partition
        )
        self._state.get(partition, {}).pop(fingerprint, None)

    def expire(self) -> int:
        """Drop in-memory entries older than the window; the topic's retention does the rest."""
        horizon = _now_ms() - self._window_ms
        dropped = 0
        for entries in self._state.values():
            old = [fp for fp, (_seen, stamp) in entries.items() if stamp < horizon]
            for fingerprint in old:
                del entries[fingerprint]
            dropped += len(old)
        return dropped


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
