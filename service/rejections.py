"""Notes of the callbacks we answered 4xx, for reconciliation with Adjust's counts.

Adjust drops a callback answered 4xx for good, so the count of such answers per
app, day, activity kind and reason is what tells "we refused it" from "it never
came". The receiver produces one small note per refusal to
``<callbacks topic>.rejections``, fire-and-forget: the answer never waits
for it, and a note that cannot be written is only counted as lost
(:attr:`RejectionNotes.lost`), never retried at the caller's expense. The
KPI sink folds the notes into the store.

A note holds no personal data: the app key (a configured one only), the
15-minute UTC bucket of the activity (its ``created_at`` when the query has a
readable one, else the receipt), the activity kind read from the query
(bounded to the known kinds, else ``other``; ``""`` when absent) and our own
error code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl

import orjson
from aiokafka import AIOKafkaProducer

from postback_hub.service.fields import KNOWN_ACTIVITY_KINDS
from postback_hub.service.producer import kafka_client_options
from postback_hub.service.settings import Settings
from postback_hub.service.topics import ensure_topic

log = logging.getLogger("postback_hub.receiver")

BUCKET_S = 15 * 60
SCHEMA = 1


def rejections_topic(callbacks_topic: str) -> str:
    return f"{callbacks_topic}.rejections"


@dataclass(frozen=True, slots=True)
class RejectionNote:
    app: str
    bucket: int  # Unix seconds of the activity's 15-minute UTC bucket
    kind: str  # activity kind, "other" for an unknown one, "" when absent
    reason: str  # our error code (invalid_secret, missing_device_id, ...)
    status: int

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "schema": SCHEMA,
                "app": self.app,
                "bucket": self.bucket,
                "kind": self.kind,
                "reason": self.reason,
                "status": self.status,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> RejectionNote:
        """The note ``data`` holds; ValueError when it is not one."""
        value = orjson.loads(data)
        if not isinstance(value, dict) or value.get("schema") != SCHEMA:
            raise ValueError("not a rejection note")
        app, bucket, kind = value.get("app"), value.get("bucket"), value.get("kind")
        reason, status = value.get("reason"), value.get("status")
        if not (
            isinstance(app, str)
            and isinstance(bucket, int)
            and isinstance(kind, str)
            and isinstance(reason, str)
            and isinstance(status, int)
        ):
            raise ValueError("a rejection note lacks a field")
        return cls(app, bucket, kind, reason, status)


_MAX_QUERY = 64 * 1024
# Activity times outside these bounds are not believed (Unix seconds: 2001 .. 2286).
_EARLIEST_S, _LATEST_S = 1_000_000_000, 10_000_000_000


def facts_from_query(raw_query: str) -> tuple[str, float | None]:
    """The activity kind (bounded: never a caller's free text) and the activity time
    (``created_at_milli``, else ``created_at``) a refused request named.

    Only the query is read (a POST body's fields are not known here): ``""`` and
    None then. Adjust counts an activity on the day it happened, so that is the
    day its refusal belongs to; without a readable time, the time of receipt.
    """
    if len(raw_query) > _MAX_QUERY:
        return "", None
    kind, created_s, created_ms = "", None, None
    for name, value in parse_qsl(raw_query, keep_blank_values=True):
        if name == "activity_kind" and not kind:
            text = value.strip().lower()
            kind = text if not text or text in KNOWN_ACTIVITY_KINDS else "other"
        elif name == "created_at_milli" and created_ms is None and value.strip().isdigit():
            created_ms = int(value.strip()) / 1000
        elif name == "created_at" and created_s is None and value.strip().isdigit():
            created_s = float(int(value.strip()))
    when = created_ms if created_ms is not None else created_s
    if when is not None and not _EARLIEST_S <= when <= _LATEST_S:
        when = None
    return kind, when


def kind_from_query(raw_query: str) -> str:
    return facts_from_query(raw_query)[0]


def note_of(app: str, kind: str, reason: str, status: int, at_s: float) -> RejectionNote:
    return RejectionNote(app, int(at_s) // BUCKET_S * BUCKET_S, kind, reason, status)


# Notes in flight at most: a flood of refusals (a caller with a wrong secret) must not
# pile up tasks while the broker is slow or the topic missing; beyond, notes are lost.
MAX_IN_FLIGHT = 1000
# After a note fails, notes are dropped for this long instead of each waiting in turn.
_PAUSE_AFTER_FAILURE_S = 10.0


class RejectionNotes:
    """Writes notes with the receiver's producer, without ever making a caller wait."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._kafka = settings.kafka
        self.topic = rejections_topic(settings.kafka.topic)
        self._tasks: set[asyncio.Task[None]] = set()
        self._topic_ready = False
        self._paused_until = 0.0
        self.lost = 0

    def send(self, producer: AIOKafkaProducer | None, note: RejectionNote) -> None:
        """Schedule the note; returns at once."""
        if (
            producer is None
            or len(self._tasks) >= MAX_IN_FLIGHT
            or time.monotonic() < self._paused_until
        ):
            self.lost += 1
            return
        task = asyncio.get_running_loop().create_task(self._send(producer, note))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, producer: AIOKafkaProducer, note: RejectionNote) -> None:
        try:
            async with asyncio.timeout(self._kafka.produce_timeout_s):
                if not self._topic_ready and self._kafka.create_topic:
                    await ensure_topic(
                        kafka_client_options(self._settings),
                        self.topic,
                        1,
                        self._kafka.topic_replication_factor,
                    )
                self._topic_ready = True
                await producer.send_and_wait(
                    self.topic, value=note.to_json(), key=note.app.encode()
                )
        except Exception as exc:  # a lost note costs a cause in a report, never a callback
            self.lost += 1
            self._paused_until = time.monotonic() + _PAUSE_AFTER_FAILURE_S
            log.debug("rejection note not written", extra={"error": type(exc).__name__})

    async def close(self) -> None:
        """Let notes in flight finish (briefly) before the producer stops."""
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await asyncio.gather(*self._tasks, return_exceptions=True)
        for task in list(self._tasks):  # what did not finish is lost, not left running
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
