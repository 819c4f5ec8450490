"""Which activities a destination already received, kept in Kafka so it survives crashes.

The state is a log topic co-partitioned with the callbacks topic: partition p
of the log holds the fingerprints seen on partition p (of the callbacks topic
and of the destination's retry topics, which are parked by partition). When a
consumer is assigned partition p it reads log partition p before handling any
message of p, so the state follows the partition through rebalances and
restarts. The topic keeps twice the de-duplication window (time retention), so
a restore reads a bounded amount.

Marks are batched: one record per partition carries every mark made within a
few milliseconds (those awaited before a request goes out are written at the
end of the current event-loop turn), and each mark's future resolves with its
record's ``acks=all``. A message is settled (its offset may be committed) only
after its mark is acknowledged; offsets are committed every half second, so
the wait costs nothing, and it spares the broker and the producer about one
produce per delivered message.

- ``delivered``: the partner has it; a later copy is skipped.
- ``pending`` (destinations that must never post twice): written just before a
  request goes out and cleared after a definite answer. Finding ``pending``
  after a restart means the process died with the request in flight: ambiguous.

The window of duplicates after a crash is the set of deliveries whose marks were
not yet acknowledged. :meth:`DedupStore.room` bounds it: a delivery waits before
it goes out while ``max_unacknowledged`` marks are outstanding, so a SIGKILL at
any rate (a catch-up after an outage included) repeats at most that many.

:class:`NoDedup` is the policy for ``dedup_window_s = 0``: it remembers nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from enum import Enum
from typing import Any, Protocol

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError


class Seen(Enum):
    DELIVERED = "d"
    PENDING = "p"


_CLEARED = "c"
_Entry = tuple[str, str, "asyncio.Future[None]"]
# How long a mark that nobody waits for may sit in the buffer.
MARK_LINGER_S = 0.01


class StoreClosed(KafkaError):  # type: ignore[misc]
    """A mark made after :meth:`DedupStore.close`: it is not written. A KafkaError, since
    callers treat it like any failed write (the message stays unsettled)."""


class Dedup(Protocol):
    """What the runtime asks of a de-duplication policy."""

    async def restore(self, partitions: Iterable[int]) -> None: ...
    def forget(self, partitions: Iterable[int]) -> None: ...
    def lookup(self, partition: int, fingerprint: str) -> Seen | None: ...
    def expire(self) -> int: ...
    async def room(self) -> None: ...
    def mark_soon(
        self, partition: int, fingerprint: str, seen: Seen
    ) -> asyncio.Future[None] | None: ...
    async def mark(self, partition: int, fingerprint: str, seen: Seen) -> None: ...
    async def clear(self, partition: int, fingerprint: str) -> None: ...
    @property
    def closed(self) -> bool: ...
    async def flush(self) -> None: ...
    async def close(self) -> None: ...


class NoDedup:
    """No de-duplication (``dedup_window_s = 0``): nothing is remembered or written."""

    def __init__(self) -> None:
        self._closed = False

    async def restore(self, partitions: Iterable[int]) -> None:
        return None

    def forget(self, partitions: Iterable[int]) -> None:
        return None

    def lookup(self, partition: int, fingerprint: str) -> Seen | None:
        return None

    def expire(self) -> int:
        return 0

    async def room(self) -> None:
        return None

    def mark_soon(
        self, partition: int, fingerprint: str, seen: Seen
    ) -> asyncio.Future[None] | None:
        return None

    async def mark(self, partition: int, fingerprint: str, seen: Seen) -> None:
        return None

    async def clear(self, partition: int, fingerprint: str) -> None:
        return None

    @property
    def closed(self) -> bool:
        return self._closed

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        self._closed = True


class DedupStore:
    def __init__(
        self,
        client_options: dict[str, Any],
        topic: str,
        window_s: float,
        producer: AIOKafkaProducer,
        max_unacknowledged: int = 256,
    ) -> None:
        if window_s <= 0:
            raise ValueError("a DedupStore needs a window; use NoDedup for none")
        self._options = client_options
        self.topic = topic
        self._window_ms = int(window_s * 1000)
        self._producer = producer
        self._max_unacknowledged = max_unacknowledged
        self._unacknowledged = 0
        self._room = asyncio.Event()
        self._room.set()
        self._state: dict[int, dict[str, tuple[Seen, int]]] = {}
        self._buffers: dict[int, list[_Entry]] = {}
        self._flush_soon = False
        self._linger: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._flushes: set[asyncio.Task[None]] = set()
        self._closed = False

    # ------------------------------------------------------------------ reading

    async def restore(self, partitions: Iterable[int]) -> None:
        """Load the log of ``partitions`` (from its beginning to its current end)."""
        wanted = sorted(set(partitions) - set(self._state))
        if not wanted:
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
                    for message in messages:
                        _apply(states[tp.partition], message.value, horizon)
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
        entry = self._state.get(partition, {}).get(fingerprint)
        if entry is None or entry[1] < _now_ms() - self._window_ms:
            return None
        return entry[0]

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

    # ------------------------------------------------------------------ writing

    async def room(self) -> None:
        """Wait while ``max_unacknowledged`` marks are outstanding (call before sending)."""
        while self._unacknowledged >= self._max_unacknowledged and not self._closed:
            self._room.clear()
            await self._room.wait()

    def _acknowledged(self, _future: asyncio.Future[None]) -> None:
        self._unacknowledged -= 1
        if self._unacknowledged < self._max_unacknowledged:
            self._room.set()

    def mark_soon(
        self, partition: int, fingerprint: str, seen: Seen
    ) -> asyncio.Future[None] | None:
        """Record ``seen``: at once in memory (this process already skips a copy), and in
        Kafka with the next batch; the future resolves on its ack."""
        self._state.setdefault(partition, {})[fingerprint] = (seen, _now_ms())
        return self._enqueue(partition, fingerprint, seen.value, urgent=False)

    async def mark(self, partition: int, fingerprint: str, seen: Seen) -> None:
        """Record ``seen`` and wait until Kafka acknowledged it (flushed without delay)."""
        self._state.setdefault(partition, {})[fingerprint] = (seen, _now_ms())
        await self._enqueue(partition, fingerprint, seen.value, urgent=True)

    async def clear(self, partition: int, fingerprint: str) -> None:
        """Remove a ``pending`` mark once the answer was definite."""
        self._state.get(partition, {}).pop(fingerprint, None)
        await self._enqueue(partition, fingerprint, _CLEARED, urgent=True)

    def _enqueue(
        self, partition: int, fingerprint: str, state: str, *, urgent: bool
    ) -> asyncio.Future[None]:
        """Buffer a mark. An urgent one (awaited) is written at the end of this loop turn;
        the others within :data:`MARK_LINGER_S`, together with whatever came meanwhile."""
        future: asyncio.Future[None] = self._loop.create_future()
        if self._closed:
            # The producer is going away: arm no timer, write nothing, say so.
            future.set_exception(StoreClosed("the de-duplication store is closed"))
            return future
        self._unacknowledged += 1
        future.add_done_callback(self._acknowledged)
        self._buffers.setdefault(partition, []).append((fingerprint, state, future))
        if urgent:
            if not self._flush_soon:
                self._flush_soon = True
                self._loop.call_soon(self._flush_now)
        elif self._linger is None and not self._flush_soon:
            self._linger = self._loop.call_later(MARK_LINGER_S, self._flush_now)
        return future

    def _flush_now(self) -> None:
        self._flush_soon = False
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if not self._buffers:
            return
        buffers, self._buffers = self._buffers, {}
        task = self._loop.create_task(self._write(buffers))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _write(self, buffers: dict[int, list[_Entry]]) -> None:
        """One record per partition, all sent together; each mark learns its record's fate."""
        stamp = _now_ms()
        sends = []
        for partition, entries in buffers.items():
            value = orjson.dumps({"t": stamp, "e": [[fp, state] for fp, state, _f in entries]})
            sends.append(self._producer.send_and_wait(self.topic, value=value, partition=partition))
        results = await asyncio.gather(*sends, return_exceptions=True)
        for entries, result in zip(buffers.values(), results, strict=True):
            for _fp, _state, future in entries:
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(
                        result if isinstance(result, Exception) else RuntimeError("cancelled")
                    )
                else:
                    future.set_result(None)

    @property
    def closed(self) -> bool:
        return self._closed

    async def flush(self) -> None:
        """Write what is buffered and wait for it (best effort); the store stays open."""
        self._flush_now()
        if self._flushes:
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._flushes, return_exceptions=True)

    async def close(self) -> None:
        """Fail every later mark (the producer is about to stop), then flush."""
        self._closed = True
        self._room.set()
        await self.flush()


def _apply(entries: dict[str, tuple[Seen, int]], raw: bytes | None, horizon: int) -> None:
    if raw is None:
        return
    value = orjson.loads(raw)
    stamp = value["t"]
    if stamp < horizon:
        return
    for fingerprint, state in value["e"]:
        if state == _CLEARED:
            entries.pop(fingerprint, None)
        else:
            entries[fingerprint] = (Seen(state), stamp)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
