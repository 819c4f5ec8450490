"""The sending step: one request with in-process retries, or its dry-run stand-in.

:class:`HttpSend` applies, in order, the circuit breaker, the destination's rate
limit, the partner's own pacing (waited out only within the in-process budget,
and before any intent is recorded), the ambiguity policy's intent mark, then
one attempt; retryable outcomes are retried with capped, jittered backoff
honouring ``Retry-After`` until ``retry.attempts`` or ``retry.in_process_s``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import NamedTuple, Protocol

import aiohttp

from postback_hub.consumers.config import HttpDestination
from postback_hub.consumers.dedup import Dedup
from postback_hub.consumers.delivery import (
    Delivered,
    Describes,
    Destination,
    Outcome,
    Paced,
    Retry,
)
from postback_hub.consumers.limits import CircuitBreaker, TokenBucket
from postback_hub.consumers.metrics import ConsumerMetrics
from postback_hub.consumers.redact import describe_request
from postback_hub.consumers.retry import backoff_s
from postback_hub.consumers.runtime.policies import Ambiguity
from postback_hub.consumers.runtime.steps import Work

log = logging.getLogger("postback_hub.consumer")


class Sent(NamedTuple):
    outcome: Outcome
    attempts: int
    # Dry run: nothing went out, so no timing or end-to-end figure is recorded.
    dry_run: bool = False


class Sender(Protocol):
    async def submit(self, work: Work) -> Sent:
        """Deliver ``work.request``; never raises for the partner's or network trouble."""
        ...


class HttpSend:
    """Sends with in-process retries (see the module docstring)."""

    def __init__(
        self,
        destination: Destination,
        config: HttpDestination,
        session: aiohttp.ClientSession,
        ambiguity: Ambiguity,
        dedup: Dedup,
        metrics: ConsumerMetrics,
    ) -> None:
        self._destination = destination
        self._config = config
        self._session = session
        self._ambiguity = ambiguity
        self._dedup = dedup
        self._metrics = metrics
        self.breaker = CircuitBreaker(config.breaker.failure_threshold, config.breaker.open_s)
        self._limiter = (
            TokenBucket(config.rate_limit_per_s) if config.rate_limit_per_s is not None else None
        )
        self._pacing = destination.send_delay if isinstance(destination, Paced) else None

    async def submit(self, work: Work) -> Sent:
        config, metrics, ambiguity = self._config, self._metrics, self._ambiguity
        partition, fingerprint = work.tp.partition, work.record.fingerprint
        request = work.request
        deadline = time.monotonic() + config.retry.in_process_s
        attempts = 0
        while True:
            # Closed breaker (the common case): no wait, no coroutine.
            if self.breaker.try_acquire() != 0.0 and not await self.breaker.wait(deadline):
                return Sent(Retry("breaker_open"), attempts)
            if self._limiter is not None:
                await self._limiter.acquire()
            if self._pacing is not None:
                hold = self._pacing(request)
                if hold > deadline - time.monotonic():
                    return Sent(Retry("rate_limited", retry_after_s=hold), attempts)
                if hold > 0:
                    await asyncio.sleep(hold)
            # Bounds the deliveries whose marks are unacknowledged: the crash window.
            await self._dedup.room()
            if not await ambiguity.before_attempt(partition, fingerprint):
                return Sent(Retry("intent_not_recorded"), attempts)  # nothing was sent
            started = time.perf_counter()
            outcome = await self._destination.send(self._session, request)
            metrics.delivery_seconds.observe(time.perf_counter() - started)
            attempts += 1
            # A 4xx means the partner is up and answering: only retryable failures trip it.
            self.breaker.record(not isinstance(outcome, Retry))
            if not isinstance(outcome, Retry) or ambiguity.stops_retrying(outcome):
                return Sent(outcome, attempts)
            delay = backoff_s(
                attempts,
                config.retry.backoff_initial_s,
                config.retry.backoff_max_s,
                outcome.retry_after_s,
            )
            if attempts >= config.retry.attempts or time.monotonic() + delay > deadline:
                return Sent(outcome, attempts)
            await ambiguity.between_attempts(partition, fingerprint)
            metrics.retried.inc()
            await asyncio.sleep(delay)


class DryRunSend:
    """Logs the exact request, device ids and secrets masked, instead of sending it."""

    def __init__(self, destination: Destination) -> None:
        self._destination = destination
        self._describe = (
            destination.describe
            if isinstance(destination, Describes)
            else lambda record, request: describe_request(request, record, ())
        )

    async def submit(self, work: Work) -> Sent:
        log.info(
            "dry run: request not sent",
            extra={
                "destination": self._destination.name,
                "fingerprint": work.record.fingerprint,
                "request": self._describe(work.record, work.request),
            },
        )
        return Sent(Delivered(0), 0, dry_run=True)
