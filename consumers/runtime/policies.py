"""Policies chosen once, when a destination's runtime is built.

- Ambiguity: what a request that may have been processed (a timeout after
  sending, a gateway's 502) comes to. :class:`AtLeastOnce` retries it;
  :class:`NeverTwice` (X, which has no de-duplication) writes an intent mark
  before every request, clears it once the outcome is durable, and dead-letters
  anything ambiguous, including a message found with a mark after a restart.
- De-duplication: :class:`~postback_hub.consumers.dedup.DedupStore` or
  :class:`~postback_hub.consumers.dedup.NoDedup`, by ``dedup_window_s``.
"""

from __future__ import annotations

import contextlib
from typing import Protocol

from aiokafka.errors import KafkaError

from postback_hub.consumers.dedup import Dedup, Seen
from postback_hub.consumers.delivery import Retry


class Ambiguity(Protocol):
    """How the runtime treats requests that may have been processed."""

    async def before_attempt(self, partition: int, fingerprint: str) -> bool:
        """Just before a request goes out; False when it must not go out (nothing sent)."""
        ...

    async def between_attempts(self, partition: int, fingerprint: str) -> None:
        """After a definite failure, before the next attempt."""
        ...

    async def after_settled(self, partition: int, fingerprint: str) -> None:
        """The outcome (parked, dead-lettered) is durable; never raises."""
        ...

    def stops_retrying(self, outcome: Retry) -> bool:
        """Whether this retryable outcome ends the attempts at once."""
        ...

    def dead_letter_reason(self, outcome: Retry) -> str | None:
        """The dead-letter reason for an outcome that must not be retried, or None."""
        ...

    def seen_pending_reason(self) -> str | None:
        """A message found with an intent mark (a restart mid-request): its dead-letter
        reason, or None to deliver it as usual."""
        ...


class AtLeastOnce:
    """Retry anything retryable; a partner may see an ambiguous request twice."""

    async def before_attempt(self, partition: int, fingerprint: str) -> bool:
        return True

    async def between_attempts(self, partition: int, fingerprint: str) -> None:
        return None

    async def after_settled(self, partition: int, fingerprint: str) -> None:
        return None

    def stops_retrying(self, outcome: Retry) -> bool:
        return False

    def dead_letter_reason(self, outcome: Retry) -> str | None:
        return None

    def seen_pending_reason(self) -> str | None:
        return None


class NeverTwice:
    """Intent marks around every request; ambiguous outcomes are dead-lettered."""

    def __init__(self, dedup: Dedup) -> None:
        self._dedup = dedup

    async def before_attempt(self, partition: int, fingerprint: str) -> bool:
        try:
            await self._dedup.mark(partition, fingerprint, Seen.PENDING)
        except KafkaError:
            return False
        return True

    async def between_attempts(self, partition: int, fingerprint: str) -> None:
        await self._dedup.clear(partition, fingerprint)

    async def after_settled(self, partition: int, fingerprint: str) -> None:
        # A crash before this leaves the mark, which only makes us more careful.
        with contextlib.suppress(KafkaError):
            await self._dedup.clear(partition, fingerprint)

    def stops_retrying(self, outcome: Retry) -> bool:
        return outcome.ambiguous

    def dead_letter_reason(self, outcome: Retry) -> str | None:
        return f"ambiguous_{outcome.reason}" if outcome.ambiguous else None

    def seen_pending_reason(self) -> str | None:
        return "ambiguous_after_restart"
