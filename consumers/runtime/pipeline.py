"""One message from taken to settled: the steps in order, and what each outcome comes to.

    Route -> Deduplicate -> AgeLimit -> Sender -> outcome
      Delivered  -> delivered mark (+ the destination's after-delivery record)
      Permanent  -> dead letter
      Retry      -> dead letter when the ambiguity policy says so, else park
      a Verdict of an earlier step (skip, duplicate, dead letter) ends it there

:meth:`Pipeline.submit` returns None once the outcome is durable, or the future
of the write the offset must wait for (the de-dup mark); the commit step
(``commit.py``) settles the offset either way. It never settles anything itself.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import TopicPartition

from postback_hub.consumers.dedup import Dedup, Seen
from postback_hub.consumers.delivery import (
    Delivered,
    Destination,
    Permanent,
    PublishesAfterDelivery,
)
from postback_hub.consumers.metrics import ConsumerMetrics
from postback_hub.consumers.retry import RetryState
from postback_hub.consumers.runtime.message import Message, now_ms
from postback_hub.consumers.runtime.policies import Ambiguity
from postback_hub.consumers.runtime.send import Sender
from postback_hub.consumers.runtime.settle import DeadLetterLimitReached, Settler
from postback_hub.consumers.runtime.steps import (
    AgeLimit,
    DeadLetter,
    Deduplicate,
    Duplicate,
    Route,
    Skipped,
    Verdict,
    Work,
)
from postback_hub.service.record import millis_from_iso

log = logging.getLogger("postback_hub.consumer")


class Pipeline:
    """The per-message steps of one destination, built once with its policies."""

    def __init__(
        self,
        destination: Destination,
        route: Route,
        deduplicate: Deduplicate,
        age_limit: AgeLimit,
        sender: Sender,
        settler: Settler,
        dedup: Dedup,
        ambiguity: Ambiguity,
        metrics: ConsumerMetrics,
    ) -> None:
        self._destination = destination
        self._route = route
        self._deduplicate = deduplicate
        self._age_limit = age_limit
        self._sender = sender
        self._settler = settler
        self._dedup = dedup
        self._ambiguity = ambiguity
        self._metrics = metrics
        self._publishes = destination if isinstance(destination, PublishesAfterDelivery) else None

    async def submit(self, tp: TopicPartition, message: Message) -> asyncio.Future[Any] | None:
        routed = self._route.submit(tp, message)
        if not isinstance(routed, Work):
            await self._conclude(tp, message, routed[0], routed[1], None)
            return None
        work = routed
        stop = self._deduplicate.submit(work) or self._age_limit.submit(work)
        if stop is not None:
            await self._conclude(tp, message, work.state, stop, work)
            return None
        sent = await self._sender.submit(work)
        state = RetryState(work.state.attempts + sent.attempts, *work.state[1:])
        outcome = sent.outcome
        if isinstance(outcome, Delivered):
            self._settler.limit.settled()
            return await self._delivered(work, outcome, sent.dry_run)
        if isinstance(outcome, Permanent):
            try:
                await self._settler.dead_letter(
                    tp, message, state, outcome.reason, outcome.status, outcome.body_excerpt
                )
            except DeadLetterLimitReached:
                # A definite answer: no intent mark should make it look ambiguous later.
                await self._ambiguity.after_settled(tp.partition, work.record.fingerprint)
                raise
        elif (reason := self._ambiguity.dead_letter_reason(outcome)) is not None:
            await self._settler.dead_letter(
                tp, message, state, reason, outcome.status, outcome.body_excerpt
            )
        else:
            await self._settler.park(tp, message, state, outcome)
        await self._ambiguity.after_settled(tp.partition, work.record.fingerprint)
        return None

    async def _conclude(
        self,
        tp: TopicPartition,
        message: Message,
        state: RetryState,
        verdict: Verdict,
        work: Work | None,
    ) -> None:
        if isinstance(verdict, Skipped):
            self._metrics.skipped(verdict.reason)
            self._settler.limit.settled()
        elif isinstance(verdict, Duplicate):
            self._metrics.deduplicated.inc()
            self._settler.limit.settled()
        elif isinstance(verdict, DeadLetter):
            await self._settler.dead_letter(
                tp, message, state, verdict.reason, None, verdict.detail
            )
            if verdict.clear_intent and work is not None:
                # Cleared once dead-lettered, so an operator's replay sends it.
                await self._dedup.clear(tp.partition, work.record.fingerprint)

    async def _delivered(
        self, work: Work, outcome: Delivered, dry_run: bool
    ) -> asyncio.Future[Any] | None:
        metrics = self._metrics
        if dry_run:
            metrics.dry_run.inc()
        else:
            metrics.delivered.inc()
            received_ms = millis_from_iso(work.record.received_at)
            metrics.end_to_end_seconds.observe(max(0, now_ms() - received_ms) / 1000)
        # The device's next activity may go now; the offset waits for these records.
        mark = self._dedup.mark_soon(work.tp.partition, work.record.fingerprint, Seen.DELIVERED)
        extra = None
        if self._publishes is not None and not dry_run:
            try:
                extra = await self._publishes.after_delivery(work.record, work.request, outcome)
            except Exception as exc:
                # Delivered is delivered: losing a follow-up write must not undo that.
                log.warning(
                    "after-delivery step failed",
                    extra={"destination": self._destination.name, "error": type(exc).__name__},
                )
        if extra is None:
            return mark
        return extra if mark is None else asyncio.ensure_future(asyncio.gather(mark, extra))
