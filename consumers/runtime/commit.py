"""Which offsets may be committed: only up to the first message not yet settled.

Messages of a partition finish out of order (different devices are delivered
concurrently). Committing offset N tells Kafka every message before N is done,
so the commit point is the lowest unsettled offset, never past it.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field


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
