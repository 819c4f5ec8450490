"""Settling a message that was not delivered: parking it on a retry topic, or writing it
to the dead-letter topic, each durably (acks=all) before its offset may move.

:class:`KafkaWriter` waits Kafka trouble out, because settling without the copy
would lose the activity; :class:`DeadLetterLimit` stops the consumer when dead
letters pile up (a bad deploy would otherwise empty the stream into the DLQ).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from typing import Protocol

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from postback_hub.consumers.config import DeadLetterLimit as DeadLetterLimitSettings
from postback_hub.consumers.config import RetrySettings
from postback_hub.consumers.delivery import Retry
from postback_hub.consumers.metrics import ConsumerMetrics
from postback_hub.consumers.retry import (
    H_ATTEMPTS,
    H_BODY,
    H_DEAD_AT,
    H_FIRST_SEEN,
    H_ORIGIN,
    H_REASON,
    H_STATUS,
    RetryState,
    park_tier,
    retry_headers,
)
from postback_hub.consumers.runtime.message import Message, now_ms, origin
from postback_hub.consumers.topics import DestinationTopics

log = logging.getLogger("postback_hub.consumer")


PRODUCE_RETRY_S = 1.0
BODY_HEADER_BYTES = 512
# A reason becomes a metric label and a log word only in this shape; partner text
# (an error code that echoes the request) never mints series or reaches a log line.
_SAFE_REASON = re.compile(r"^[A-Za-z0-9_]{1,60}$")


def safe_reason(reason: str) -> str:
    """``reason`` when it has the shape of a code, else a fixed word."""
    return reason if _SAFE_REASON.match(reason) else "unrecognised_reason"


class FatalWriteError(Exception):
    """Kafka refused a write that waiting cannot fix (size, authorisation)."""


class DeadLetterLimitReached(Exception):
    """Too many dead letters: the consumer stops before writing this one."""


class _Sends(Protocol):
    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> object: ...


class KafkaWriter:
    """Writes a copy of a message (parked or dead) and returns only once it is durable.

    Retriable errors are waited out (nothing is settled meanwhile); any other
    raises :class:`FatalWriteError`, which stops the consumer.
    """

    def __init__(self, producer: _Sends) -> None:
        self._producer = producer

    async def write(
        self, topic: str, partition: int, message: Message, headers: list[tuple[str, bytes]]
    ) -> None:
        while True:
            try:
                await self._producer.send_and_wait(
                    topic,
                    value=message.value,
                    key=message.key,
                    partition=partition,
                    headers=headers,
                )
                return
            except KafkaError as exc:
                if not exc.retriable:
                    log.error(
                        "cannot write to Kafka, and retrying will not help",
                        extra={"topic": topic, "error": type(exc).__name__},
                    )
                    raise FatalWriteError(type(exc).__name__) from exc
                log.warning(
                    "cannot write to Kafka yet", extra={"topic": topic, "error": type(exc).__name__}
                )
                await asyncio.sleep(PRODUCE_RETRY_S)


class DeadLetterLimit:
    """Counts settled outcomes; :meth:`admit` refuses a dead letter past the limit.

    Past ``consecutive`` dead letters in a row, or when dead letters would make up
    more than ``ratio`` of the last ``window`` outcomes (once that many were seen),
    the letter is refused with :class:`DeadLetterLimitReached`. Disabled: admits all.
    """

    def __init__(self, settings: DeadLetterLimitSettings) -> None:
        self._settings = settings
        self._consecutive = 0
        self._recent: deque[bool] = deque(maxlen=settings.window)
        self._dead_in_window = 0

    def _push(self, dead: bool) -> None:
        if len(self._recent) == self._recent.maxlen and self._recent[0]:
            self._dead_in_window -= 1
        self._recent.append(dead)
        self._dead_in_window += dead

    def settled(self) -> None:
        """An outcome that was not a dead letter (delivered, skipped, parked)."""
        self._consecutive = 0
        self._push(False)

    def admit(self, reason: str) -> None:
        settings = self._settings
        if not settings.enabled:
            return
        consecutive = self._consecutive + 1
        window_full = len(self._recent) == self._recent.maxlen
        leaving = 1 if window_full and self._recent[0] else 0
        dead = self._dead_in_window - leaving + 1
        if consecutive > settings.consecutive or (
            window_full and dead > settings.ratio * settings.window
        ):
            raise DeadLetterLimitReached(
                f"{consecutive} dead letters in a row, {dead} of the last {len(self._recent)}"
                f" outcomes (limit: {settings.consecutive} in a row, {settings.ratio:.0%});"
                f" last reason {safe_reason(reason)}"
            )
        self._consecutive = consecutive
        self._push(True)


class Settler:
    """The settling step for messages that were not delivered.

    ``park`` writes the message to the retry tier its history calls for (or dead-
    letters it when that would take it past ``max_age_s``); ``dead_letter`` writes it
    to the DLQ with the reason, last status and a body excerpt in headers. Both
    return once the copy is durable; the caller then settles the offset.
    """

    def __init__(
        self,
        destination: str,
        topics: DestinationTopics,
        retry: RetrySettings,
        writer: KafkaWriter,
        limit: DeadLetterLimit,
        metrics: ConsumerMetrics,
    ) -> None:
        self._destination = destination
        self._topics = topics
        self._retry = retry
        self._writer = writer
        self.limit = limit
        self._metrics = metrics

    async def park(
        self, tp: TopicPartition, message: Message, state: RetryState, result: Retry
    ) -> None:
        delays = self._retry.park_delays_s
        tier = park_tier(state.parked, delays, result.retry_after_s)
        due = now_ms() + int(delays[tier] * 1000)
        assert state.first_seen_ms is not None
        if due - state.first_seen_ms > self._retry.max_age_s * 1000:
            await self.dead_letter(
                tp,
                message,
                state,
                f"retries_exhausted_{result.reason}",
                result.status,
                result.body_excerpt,
            )
            return
        parked = RetryState(state.attempts, state.first_seen_ms, state.parked + 1)
        headers = retry_headers(parked, due, result.reason, result.status, origin(tp, message))
        await self._writer.write(self._topics.retry_tiers[tier], tp.partition, message, headers)
        self.limit.settled()
        self._metrics.parked.inc()

    async def dead_letter(
        self,
        tp: TopicPartition,
        message: Message,
        state: RetryState,
        reason: str,
        status: int | None,
        body: str,
    ) -> None:
        self.limit.admit(reason)
        headers = [
            (H_REASON, reason.encode()),
            (H_STATUS, str(status or "").encode()),
            (H_BODY, body.encode()[:BODY_HEADER_BYTES]),
            (H_ATTEMPTS, str(state.attempts).encode()),
            (H_FIRST_SEEN, str(state.first_seen_ms or message.timestamp).encode()),
            (H_DEAD_AT, str(now_ms()).encode()),
            (H_ORIGIN, origin(tp, message).encode()),
        ]
        await self._writer.write(self._topics.dead_letter, tp.partition, message, headers)
        word = safe_reason(reason)
        self._metrics.dead_lettered(word)
        log.warning(
            "dead-lettered",
            extra={"destination": self._destination, "reason": word, "status": status},
        )
