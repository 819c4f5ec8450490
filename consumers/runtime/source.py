"""The source step: fetching from Kafka, retry tiers that are not due yet, rebalances.

Fetched messages of an assigned partition are registered with the commit step
and submitted to the :class:`~postback_hub.consumers.ordering.KeyedScheduler`
under their key (one device at a time). A retry-topic partition whose head is
not due is paused and rewound, and resumed when it is. A partition's messages
are handled only after its de-dup state is restored; on revocation its
in-flight work gets a bounded wait, what is settled is committed, the rest is
abandoned uncommitted for the next owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from postback_hub.consumers.dedup import Dedup
from postback_hub.consumers.ordering import KeyedScheduler
from postback_hub.consumers.retry import due_ms
from postback_hub.consumers.runtime.commit import Committer
from postback_hub.consumers.runtime.message import Message, now_ms

log = logging.getLogger("postback_hub.consumer")

Handler = Callable[[TopicPartition, Message], Awaitable[None]]

_RESTORE_ATTEMPTS = 30


class RestoreFailed(Exception):
    """The de-dup state of assigned partitions could not be loaded."""


class KafkaSource:
    """Owns the consumer's partitions: what is fetched, paused, assigned and revoked.

    Contract: ``poll`` fetches one batch (at most ``room`` messages) and submits it;
    ``owns`` says whether a partition may be worked on now; ``running`` wraps a
    message's handling so a revocation can cancel it; the rebalance listener it
    returns from :meth:`listener` is passed to ``subscribe``.
    """

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        source_topic: str,
        committer: Committer,
        dedup: Dedup,
        scheduler: KeyedScheduler,
        handler: Handler,
        revoke_wait_s: float,
        on_fatal: Callable[[Exception], None],
    ) -> None:
        self._consumer = consumer
        self._source_topic = source_topic
        self._committer = committer
        self._dedup = dedup
        self._scheduler = scheduler
        self._handler = handler
        self._revoke_wait_s = revoke_wait_s
        self._on_fatal = on_fatal
        self._assigned: set[TopicPartition] = set()
        self._running: dict[TopicPartition, set[asyncio.Task[Any]]] = {}
        self._resume_handles: dict[TopicPartition, asyncio.TimerHandle] = {}
        self.closing = False

    def listener(self) -> ConsumerRebalanceListener:
        return _Listener(self)

    def owns(self, tp: TopicPartition) -> bool:
        return tp in self._assigned

    @contextlib.contextmanager
    def running(self, tp: TopicPartition) -> Iterator[None]:
        task = self._scheduler.current_worker
        assert task is not None
        tasks = self._running.setdefault(tp, set())
        tasks.add(task)
        try:
            yield
        finally:
            tasks.discard(task)

    async def poll(self, room: int) -> None:
        batch = await self._consumer.getmany(timeout_ms=100, max_records=room)
        for tp, messages in batch.items():
            self._submit(tp, messages)

    def _submit(self, tp: TopicPartition, messages: list[Message]) -> None:
        consumer = self._consumer
        if tp not in self._assigned:
            # Fetched before its de-dup state was restored (or just revoked): never drop
            # it, rewind so it is fetched again once the partition is ready.
            with contextlib.suppress(Exception):  # IllegalStateError when no longer ours
                consumer.seek(tp, messages[0].offset)
            return
        is_retry_topic = tp.topic != self._source_topic
        now = now_ms()
        handler, register, submit = self._handler, self._committer.register, self._scheduler.submit
        for message in messages:
            if is_retry_topic:
                due = due_ms(message.headers)
                if due is not None and due > now:
                    # Every later message of this tier is due later still: wait for this one.
                    consumer.pause(tp)
                    consumer.seek(tp, message.offset)
                    self._resume_later(tp, (due - now) / 1000)
                    return
            register(tp, message.offset)
            submit(message.key or (tp.topic, tp.partition), functools.partial(handler, tp, message))

    def _resume_later(self, tp: TopicPartition, delay_s: float) -> None:
        def resume() -> None:
            self._resume_handles.pop(tp, None)
            if tp in self._assigned:
                self._consumer.resume(tp)

        previous = self._resume_handles.pop(tp, None)
        if previous is not None:
            previous.cancel()
        self._resume_handles[tp] = asyncio.get_running_loop().call_later(delay_s, resume)

    async def lag(self) -> int:
        lag = 0
        for tp in tuple(self._assigned):  # a rebalance may change the set meanwhile
            with contextlib.suppress(KafkaError, AssertionError):
                highwater = self._consumer.highwater(tp)
                if highwater is not None:
                    lag += max(0, highwater - await self._consumer.position(tp))
        return lag

    async def assigned(self, assigned: set[TopicPartition]) -> None:
        # Nothing of these partitions may be handled before their de-dup state is loaded.
        self._consumer.pause(*assigned)
        for attempt in range(1, _RESTORE_ATTEMPTS + 1):
            try:
                await self._dedup.restore(tp.partition for tp in assigned)
                break
            except Exception as exc:
                log.warning(
                    "de-dup restore failed; retrying",
                    extra={"error": type(exc).__name__, "attempt": attempt},
                )
                await asyncio.sleep(min(2.0 * attempt, 10.0))
        else:
            # Never sit on partitions we cannot serve: stop, so a restart (or another
            # member) takes them.
            self._on_fatal(RestoreFailed("could not restore de-duplication state"))
            return
        self._assigned |= assigned
        self._consumer.resume(*assigned)
        log.info("partitions assigned", extra={"count": len(assigned)})

    async def revoked(self, revoked: set[TopicPartition]) -> None:
        """Finish in-flight work of revoked partitions (bounded), commit it, drop the rest."""
        # While closing, in-flight work was already given its grace period.
        wait_s = 0.0 if self.closing else self._revoke_wait_s
        deadline = time.monotonic() + wait_s
        committer = self._committer
        # Polling keeps the tracker free of per-partition events; revocations are rare.
        while time.monotonic() < deadline and any(committer.pending(tp) for tp in revoked):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        await committer.commit(revoked)
        self._assigned -= revoked
        for tp in revoked:
            for task in self._running.pop(tp, set()):
                task.cancel()
            committer.forget(tp)
            handle = self._resume_handles.pop(tp, None)
            if handle is not None:
                handle.cancel()
        still_owned = {tp.partition for tp in self._assigned}
        self._dedup.forget({tp.partition for tp in revoked} - still_owned)

    def close(self) -> None:
        for handle in self._resume_handles.values():
            handle.cancel()
        self._resume_handles.clear()


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, source: KafkaSource) -> None:
        self._source = source

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._source.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self._source.assigned(set(assigned))
