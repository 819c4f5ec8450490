"""Delivered marks whose first write failed: written again before their message settles.

A delivered message settles only once its de-dup mark is acknowledged; if the
write fails, :class:`MarkRepair` writes the mark again (while the partition is
still ours and the store open) and only then settles it. At shutdown
:func:`finish_marks` gives buffered and repaired marks a bounded moment while the
producer still runs, so fewer activities reach a partner twice after a restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from postback_hub.consumers.dedup import Dedup, Seen, StoreClosed
from postback_hub.consumers.runtime.commit import Committer
from postback_hub.consumers.runtime.message import Message
from postback_hub.service.record import CallbackRecord


class MarkRepair:
    """``repair(tp, message)`` retries the delivered mark every ``retry_s`` until it is
    written (then settles the message), the partition is no longer ours, or the store
    is closed (then it stays unsettled and comes back after the restart)."""

    def __init__(
        self,
        dedup: Dedup,
        committer: Committer,
        owns: Callable[[TopicPartition], bool],
        retry_s: float = 1.0,
    ) -> None:
        self._dedup = dedup
        self._committer = committer
        self._owns = owns
        self._retry_s = retry_s

    async def repair(self, tp: TopicPartition, message: Message) -> None:
        if self._dedup.closed:
            return
        fingerprint = CallbackRecord.from_json(message.value).fingerprint
        while self._owns(tp):
            try:
                await self._dedup.mark(tp.partition, fingerprint, Seen.DELIVERED)
            except StoreClosed:
                return
            except KafkaError:
                await asyncio.sleep(self._retry_s)
                continue
            self._committer.settle(tp, message.offset)
            return


async def finish_marks(dedup: Dedup, committer: Committer, grace_s: float) -> None:
    """Shutdown: write buffered marks, give repairs ``grace_s`` while the producer still
    runs, close the store (later marks fail at once), then commit what is settled."""
    await dedup.flush()
    await asyncio.sleep(0)  # failed marks' callbacks start their repairs
    if committer.repairs:
        await asyncio.wait(list(committer.repairs), timeout=grace_s)
    await dedup.close()
    await asyncio.sleep(0)  # let acknowledged marks settle their messages
    await committer.commit()
    for task in list(committer.repairs):
        task.cancel()
