"""Where an offset moves: the one step that registers, settles and commits offsets.

Messages of a partition finish out of order (different devices are delivered
concurrently). Committing offset N tells Kafka every message before N is done,
so the commit point is the lowest unsettled offset, never past it.

A message is *registered* when it is taken from Kafka and *settled* when its
outcome is durable: delivered (and its de-dup mark acknowledged), skipped by
routing, a known duplicate, parked on a retry topic, or dead-lettered. Nothing
else in the runtime touches an offset: every other step hands its result here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

log = logging.getLogger("postback_hub.consumer")

COMMIT_INTERVAL_S = 0.5


@dataclass
class _PartitionOffsets:
    pending: set[int] = field(default_factory=set)
    # One past the highest offset seen: the commit point when nothing is pending.
    next_offset: int | None = None
    committed: int | None = None


class OffsetTracker:
    """Register each message when it is taken, settle it when it is done."""

    def __init__(self) -> None:
        self._partitions: dict[Hashable, _PartitionOffsets] = {}

    def register(self, partition: Hashable, offset: int) -> None:
        state = self._partitions.setdefault(partition, _PartitionOffsets())
        state.pending.add(offset)
        if state.next_offset is None or offset >= state.next_offset:
            state.next_offset = offset + 1

    def settle(self, partition: Hashable, offset: int) -> None:
        state = self._partitions.get(partition)
        if state is not None:
            state.pending.discard(offset)

    def pending(self, partition: Hashable | None = None) -> int:
        if partition is not None:
            state = self._partitions.get(partition)
            return 0 if state is None else len(state.pending)
        return sum(len(state.pending) for state in self._partitions.values())

    def committable(self) -> dict[Hashable, int]:
        """Partitions whose commit point moved since the last :meth:`mark_committed`."""
        result: dict[Hashable, int] = {}
        for partition, state in self._partitions.items():
            if state.next_offset is None:
                continue
            point = min(state.pending) if state.pending else state.next_offset
            if state.committed is None or point > state.committed:
                result[partition] = point
        return result

    def mark_committed(self, offsets: dict[Hashable, int]) -> None:
        for partition, offset in offsets.items():
            state = self._partitions.get(partition)
            if state is not None:
                state.committed = offset

    def forget(self, partition: Hashable) -> None:
        """Drop a revoked partition; whatever was not committed will be redelivered."""
        self._partitions.pop(partition, None)


class _Commits(Protocol):
    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None: ...


class Committer:
    """The commit step: settles messages and commits up to the lowest unsettled offset.

    Contract: ``register`` each message as it is taken; ``settle`` it once its
    outcome is durable, or hand ``settle_when`` the future of the write that makes
    it durable (and a ``repair`` coroutine run when that write fails, which
    settles by calling ``settle`` itself). ``run`` commits every
    :data:`COMMIT_INTERVAL_S` until cancelled; ``commit`` commits at once
    (``only`` some partitions, on revocation). ``freeze`` stops every later commit:
    after the dead-letter limit nothing settled from then on is committed.
    """

    def __init__(self, consumer: _Commits) -> None:
        self._consumer = consumer
        self.tracker = OffsetTracker()
        self._frozen = False
        self._final: dict[TopicPartition, int] = {}
        self._repairs: set[asyncio.Task[None]] = set()

    def register(self, tp: TopicPartition, offset: int) -> None:
        self.tracker.register(tp, offset)

    def settle(self, tp: TopicPartition, offset: int) -> None:
        self.tracker.settle(tp, offset)

    def settle_when(
        self,
        tp: TopicPartition,
        offset: int,
        durable: asyncio.Future[Any],
        repair: Callable[[], Coroutine[Any, Any, None]] | None,
    ) -> None:
        def done(future: asyncio.Future[Any]) -> None:
            if not future.cancelled() and future.exception() is None:
                self.tracker.settle(tp, offset)
            elif repair is not None:
                task = asyncio.get_running_loop().create_task(repair())
                self._repairs.add(task)
                task.add_done_callback(self._repairs.discard)
            # else: unsettled, so it comes back after the restart

        durable.add_done_callback(done)

    @property
    def repairs(self) -> set[asyncio.Task[None]]:
        """Repairs still running (a shutdown gives them a moment)."""
        return self._repairs

    def pending(self, tp: TopicPartition | None = None) -> int:
        return self.tracker.pending(tp)

    def forget(self, tp: TopicPartition) -> None:
        self.tracker.forget(tp)

    def freeze(self) -> None:
        """Keep the commit points as they are now: the next commit writes them, and no
        later settlement moves them (the dead-letter limit was reached)."""
        if not self._frozen:
            self._frozen = True
            self._final = self._committable(None)

    def _committable(self, only: set[TopicPartition] | None) -> dict[TopicPartition, int]:
        return {
            tp: offset
            for tp, offset in self.tracker.committable().items()
            if isinstance(tp, TopicPartition) and (only is None or tp in only)
        }

    async def commit(self, only: set[TopicPartition] | None = None) -> None:
        if self._frozen:
            offsets, self._final = self._final, {}
        else:
            offsets = self._committable(only)
        if not offsets:
            return
        try:
            await self._consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
        except KafkaError as exc:
            # A rebalance took the partitions: the next owner starts from the last commit.
            log.warning("commit failed", extra={"error": type(exc).__name__})
            return
        self.tracker.mark_committed(dict(offsets.items()))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(COMMIT_INTERVAL_S)
            await self.commit()
