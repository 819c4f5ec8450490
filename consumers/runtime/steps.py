"""The per-message steps before sending: routing, de-duplication, the age limit.

Each step takes a :class:`Work` item and returns a :class:`Verdict` when the
message ends there (skipped, a known duplicate, to be dead-lettered), or None
when it goes on. They are pure over their inputs and the de-dup state.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka import TopicPartition

from postback_hub.consumers.dedup import Dedup, Seen
from postback_hub.consumers.delivery import Destination, HttpRequest, MappingError, Skip
from postback_hub.consumers.retry import RetryState
from postback_hub.consumers.runtime.message import Message, now_ms
from postback_hub.consumers.runtime.policies import Ambiguity
from postback_hub.service.record import CallbackRecord


@dataclass(slots=True)
class Work:
    """One message on its way: where it came from, what it is, what it has been through."""

    tp: TopicPartition
    message: Message
    state: RetryState
    record: CallbackRecord
    request: HttpRequest


@dataclass(frozen=True, slots=True)
class Skipped:
    """Not for this destination (routing), settled as it is."""

    reason: str


@dataclass(frozen=True, slots=True)
class Duplicate:
    """Already delivered: settled without a request."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Never to be sent as it is: written to the DLQ, then settled."""

    reason: str
    detail: str = ""
    # An intent mark is on record for it and must be cleared once it is written.
    clear_intent: bool = False


Verdict = Skipped | Duplicate | DeadLetter


class Route:
    """Decodes the record and has the destination map it (pure ``prepare``).

    A record that cannot be decoded or mapped becomes a :class:`DeadLetter`;
    routing's "not for this partner" a :class:`Skipped`.
    """

    def __init__(self, destination: Destination) -> None:
        self._destination = destination

    def submit(self, tp: TopicPartition, message: Message) -> Work | tuple[RetryState, Verdict]:
        state = RetryState.from_headers(message.headers)
        if state.first_seen_ms is None:
            state = RetryState(state.attempts, message.timestamp, state.parked)
        try:
            record = CallbackRecord.from_json(message.value)
            request = self._destination.prepare(record)
        except MappingError as exc:
            return state, DeadLetter("mapping_error", str(exc))
        except (ValueError, KeyError, TypeError):
            return state, DeadLetter("undecodable_record")
        if isinstance(request, Skip):
            return state, Skipped(request.reason)
        return Work(tp, message, state, record, request)


class Deduplicate:
    """Stops what the destination already received, by the de-dup log.

    A ``delivered`` mark makes a :class:`Duplicate`. A ``pending`` mark (the last
    owner died with the request in flight) is the ambiguity policy's call.
    """

    def __init__(self, dedup: Dedup, ambiguity: Ambiguity) -> None:
        self._dedup = dedup
        self._pending_reason = ambiguity.seen_pending_reason()

    def submit(self, work: Work) -> Verdict | None:
        seen = self._dedup.lookup(work.tp.partition, work.record.fingerprint)
        if seen is Seen.DELIVERED:
            return Duplicate()
        if seen is Seen.PENDING and self._pending_reason is not None:
            return DeadLetter(self._pending_reason, clear_intent=True)
        return None


class AgeLimit:
    """Dead-letters what is older than ``max_age_s`` since it was first seen (Adjust's
    own horizon is 24 hours: later, nobody is waiting for it)."""

    def __init__(self, max_age_s: float) -> None:
        self._max_age_ms = max_age_s * 1000

    def submit(self, work: Work) -> Verdict | None:
        first_seen = work.state.first_seen_ms
        assert first_seen is not None
        if now_ms() - first_seen > self._max_age_ms:
            return DeadLetter("expired")
        return None
