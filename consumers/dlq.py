"""``postback-hub dlq list|replay DEST``: inspect and re-deliver dead letters.

A dead letter keeps the original record and, in headers, why it died (reason,
last status, a body excerpt, attempts). ``replay`` puts matching entries on the
destination's first retry topic, due now, with fresh retry state; the
destination's de-duplication makes a replay of something already delivered a
no-op, so replaying twice is safe.
"""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from postback_hub.consumers.config import HttpDestination
from postback_hub.consumers.redact import redact_text, sensitive_values
from postback_hub.consumers.retry import (
    H_ATTEMPTS,
    H_BODY,
    H_DEAD_AT,
    H_REASON,
    H_REPLAYED,
    H_STATUS,
    RetryState,
    retry_headers,
)
from postback_hub.consumers.topics import DestinationTopics
from postback_hub.service.producer import kafka_client_options
from postback_hub.service.record import CallbackRecord, iso_from_millis
from postback_hub.service.settings import Settings
from postback_hub.service.topics import ensure_topic, partitions_of


@dataclass(frozen=True, slots=True)
class DeadLetter:
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, str]

    @property
    def reason(self) -> str:
        return self.headers.get(H_REASON, "")

    def record(self) -> CallbackRecord | None:
        try:
            return CallbackRecord.from_json(self.value)
        except (ValueError, KeyError, TypeError):
            return None

    def summary(self) -> dict[str, Any]:
        """What an operator needs to decide; no raw device ids (they stay in Kafka)."""
        record = self.record()
        dead_at = self.headers.get(H_DEAD_AT, "")
        body = self.headers.get(H_BODY, "")
        if record is not None:
            body = redact_text(body, sensitive_values(record, ()))
        return {
            "partition": self.partition,
            "offset": self.offset,
            "fingerprint": record.fingerprint if record else None,
            "app": record.app if record else None,
            "activity_kind": record.activity_kind if record else None,
            "reason": self.reason,
            "status": self.headers.get(H_STATUS) or None,
            "attempts": int(self.headers.get(H_ATTEMPTS) or 0),
            "dead_at": iso_from_millis(int(dead_at)) if dead_at.isdigit() else None,
            "body": body,
        }


@dataclass(frozen=True, slots=True)
class Filters:
    reason: str | None = None
    app: str | None = None
    kind: str | None = None
    fingerprint: str | None = None

    def match(self, letter: DeadLetter) -> bool:
        if self.reason is not None and not letter.reason.startswith(self.reason):
            return False
        if self.app is None and self.kind is None and self.fingerprint is None:
            return True
        record = letter.record()
        if record is None:
            return False
        return (
            (self.app is None or record.app == self.app)
            and (self.kind is None or record.activity_kind == self.kind)
            and (self.fingerprint is None or record.fingerprint == self.fingerprint)
        )


def _topics(settings: Settings, destination: str) -> DestinationTopics:
    config = settings.destination(destination, HttpDestination)
    return DestinationTopics(settings.kafka.topic, destination, tuple(config.retry.park_delays_s))


async def _read_topic(options: dict[str, Any], topic: str) -> AsyncIterator[Any]:
    """Every record of ``topic`` as it stands now (up to the end offsets read at the start)."""
    partitions = [TopicPartition(topic, p) for p in await partitions_of(options, topic)]
    if not partitions:
        return
    consumer = AIOKafkaConsumer(**options, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if ends[tp] > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=500)
            for tp, messages in batch.items():
                for message in messages:
                    if message.offset < ends[tp]:
                        yield message
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()


async def read_dead_letters(settings: Settings, destination: str) -> AsyncIterator[DeadLetter]:
    """Every dead letter of ``destination`` as it stands now, oldest first per partition."""
    topic = _topics(settings, destination).dead_letter
    async for message in _read_topic(kafka_client_options(settings), topic):
        yield DeadLetter(
            message.partition,
            message.offset,
            message.key,
            message.value,
            {k: v.decode("utf-8", "replace") for k, v in message.headers or ()},
        )


async def list_dead_letters(settings: Settings, destination: str, filters: Filters) -> int:
    count = 0
    async for letter in read_dead_letters(settings, destination):
        if filters.match(letter):
            sys.stdout.write(orjson.dumps(letter.summary()).decode() + "\n")
            count += 1
    print(f"{count} dead letter(s)", file=sys.stderr)
    return 0


async def _replayed_letters(options: dict[str, Any], topic: str) -> set[str]:
    """Letters replayed before (``partition:offset``), from the compacted record of replays."""
    return {message.key.decode() async for message in _read_topic(options, topic) if message.key}


async def replay_dead_letters(
    settings: Settings,
    destination: str,
    filters: Filters,
    dry_run: bool = False,
    again: bool = False,
) -> int:
    """Put matching dead letters back on the first retry topic, due now.

    Each letter is replayed once: replays are recorded, and a letter replayed before is
    skipped unless ``again`` (a replay that fails again is a new letter, replayable once).
    """
    topics = _topics(settings, destination)
    options = kafka_client_options(settings)
    record_topic = f"{topics.dead_letter}.replayed"
    await ensure_topic(options, record_topic, 1, config={"cleanup.policy": "compact"})
    done = set() if again else await _replayed_letters(options, record_topic)
    producer = AIOKafkaProducer(**options, acks="all", enable_idempotence=True)
    await producer.start()
    replayed = skipped = 0
    try:
        async for letter in read_dead_letters(settings, destination):
            if not filters.match(letter):
                continue
            letter_id = f"{letter.partition}:{letter.offset}"
            if letter_id in done:
                skipped += 1
                continue
            replayed += 1
            if dry_run:
                continue
            now = time.time_ns() // 1_000_000
            headers = retry_headers(
                RetryState(0, now, 0),
                now,
                f"replay_of_{letter.reason}",
                None,
                f"{topics.dead_letter}:{letter.partition}:{letter.offset}",
            )
            headers.append((H_REPLAYED, b"1"))
            await producer.send_and_wait(
                topics.retry_tiers[0],
                value=letter.value,
                key=letter.key,
                partition=letter.partition,
                headers=headers,
            )
            await producer.send_and_wait(record_topic, value=b"1", key=letter_id.encode())
    finally:
        await producer.stop()
    verb = "would replay" if dry_run else "replayed"
    print(
        f"{verb} {replayed} dead letter(s) to {topics.retry_tiers[0]};"
        f" {skipped} replayed before (use --again to replay those too)",
        file=sys.stderr,
    )
    return 0
