"""The runtime's steps, built through their constructors with stand-ins for Kafka's
producer and the partner: what each outcome comes to, and the policies."""

from __future__ import annotations

import logging
import time
from typing import Any

import aiohttp
import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from postback_hub.consumers.config import DeadLetterLimit as DeadLetterLimitSettings
from postback_hub.consumers.config import RetrySettings
from postback_hub.consumers.dedup import NoDedup
from postback_hub.consumers.delivery import HttpRequest, Outcome, Permanent, Skip
from postback_hub.consumers.metrics import ConsumerMetrics
from postback_hub.consumers.retry import H_BODY, H_REASON
from postback_hub.consumers.runtime.pipeline import Pipeline
from postback_hub.consumers.runtime.policies import AtLeastOnce
from postback_hub.consumers.runtime.send import DryRunSend, Sent
from postback_hub.consumers.runtime.settle import (
    DeadLetterLimit,
    DeadLetterLimitReached,
    KafkaWriter,
    Settler,
    safe_reason,
)
from postback_hub.consumers.runtime.steps import AgeLimit, Deduplicate, Route, Work
from postback_hub.consumers.topics import DestinationTopics
from postback_hub.service.record import CallbackRecord
from tests.support import callback_record

TP = TopicPartition("callbacks", 0)


class RecordingProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, list[tuple[str, bytes]]]] = []

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        self.sent.append((topic, headers or []))


class Partner:
    """Sends nothing; every record becomes one request."""

    name = "bia"

    def prepare(self, record: CallbackRecord) -> HttpRequest | Skip:
        if record.activity_kind == "session":
            return Skip("sessions_off")
        return HttpRequest("GET", "https://partner.test/pb")

    async def send(self, session: aiohttp.ClientSession, request: HttpRequest) -> Outcome:
        raise AssertionError("a step under test must not send")


class Answering:
    """A sender that answers what it is given, for the settling paths."""

    def __init__(self, outcome: Outcome) -> None:
        self._outcome = outcome

    async def submit(self, work: Work) -> Sent:
        return Sent(self._outcome, 1)


def _message(record: CallbackRecord, offset: int = 5) -> ConsumerRecord[bytes, bytes]:
    now = time.time_ns() // 1_000_000  # first seen now: well inside the age limit
    return ConsumerRecord(TP.topic, 0, offset, now, 0, b"key", record.to_json(), None, 3, 100, ())


def _pipeline(
    sender: Any, producer: RecordingProducer, limit: DeadLetterLimitSettings | None = None
) -> tuple[Pipeline, ConsumerMetrics]:
    metrics = ConsumerMetrics("bia")
    dedup, ambiguity, partner = NoDedup(), AtLeastOnce(), Partner()
    settler = Settler(
        "bia",
        DestinationTopics("callbacks", "bia", (30.0,)),
        RetrySettings(),
        KafkaWriter(producer),
        DeadLetterLimit(limit or DeadLetterLimitSettings()),
        metrics,
    )
    pipeline = Pipeline(
        partner,
        Route(partner),
        Deduplicate(dedup, ambiguity),
        AgeLimit(86_400),
        sender,
        settler,
        dedup,
        ambiguity,
        metrics,
    )
    return pipeline, metrics


def _sample(metrics: ConsumerMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, {"destination": "bia", **labels})
    return value or 0.0


async def test_a_dry_run_is_counted_apart_and_times_nothing() -> None:
    record = callback_record(1, 1_700_000_000)
    pipeline, metrics = _pipeline(DryRunSend(Partner()), RecordingProducer())
    assert await pipeline.submit(TP, _message(record)) is None  # NoDedup: durable at once
    assert _sample(metrics, "postback_hub_dry_run_total") == 1
    assert _sample(metrics, "postback_hub_delivered_total") == 0
    assert _sample(metrics, "postback_hub_delivery_seconds_count") == 0
    assert _sample(metrics, "postback_hub_end_to_end_seconds_count") == 0


async def test_routing_skips_are_settled_without_a_request() -> None:
    producer = RecordingProducer()
    pipeline, metrics = _pipeline(Answering(Permanent("never")), producer)
    await pipeline.submit(TP, _message(callback_record(1, 1_700_000_000, "session")))
    assert _sample(metrics, "postback_hub_skipped_total", reason="sessions_off") == 1
    assert producer.sent == []


async def test_partner_text_never_becomes_a_label_or_a_log_word(
    caplog: pytest.LogCaptureFixture,
) -> None:
    echoed = "http_400_ip 198.51.100.7 is not allowed"
    producer = RecordingProducer()
    pipeline, metrics = _pipeline(Answering(Permanent(echoed, 400, "body 198.51.100.7")), producer)
    with caplog.at_level(logging.DEBUG):
        await pipeline.submit(TP, _message(callback_record(1, 1_700_000_000)))
    assert "198.51.100.7" not in caplog.text
    text = metrics.render().decode()
    assert "198.51.100.7" not in text
    assert _sample(metrics, "postback_hub_dead_lettered_total", reason="unrecognised_reason") == 1
    # The letter itself keeps the partner's words for the operator.
    ((topic, headers),) = producer.sent
    assert topic == "callbacks.bia.dlq"
    assert dict(headers)[H_REASON] == echoed.encode()
    assert b"198.51.100.7" in dict(headers)[H_BODY]


def test_safe_reasons_keep_codes_only() -> None:
    assert safe_reason("http_400") == "http_400"
    assert safe_reason("ambiguous_timeout") == "ambiguous_timeout"
    assert safe_reason("http_400 DUPLICATE") == "unrecognised_reason"
    assert safe_reason("x" * 61) == "unrecognised_reason"


def test_the_dead_letter_limit_counts_consecutive_letters() -> None:
    limit = DeadLetterLimit(DeadLetterLimitSettings(consecutive=3, ratio=1.0, window=10))
    for _ in range(3):
        limit.admit("http_400")
    with pytest.raises(DeadLetterLimitReached):
        limit.admit("http_400")
    limit.settled()  # a delivery in between starts the count again
    for _ in range(3):
        limit.admit("http_400")


def test_the_dead_letter_limit_counts_a_ratio_over_a_window() -> None:
    limit = DeadLetterLimit(DeadLetterLimitSettings(consecutive=1000, ratio=0.5, window=10))
    # Alternating outcomes: half of the window, never more.
    for _ in range(20):
        limit.admit("http_400")
        limit.settled()
    limit.admit("http_400")  # 5 of the last 10 once the oldest outcome leaves
    with pytest.raises(DeadLetterLimitReached):
        limit.admit("http_400")  # 6 of 10


def test_a_disabled_limit_admits_everything() -> None:
    limit = DeadLetterLimit(DeadLetterLimitSettings(enabled=False, consecutive=1))
    for _ in range(100):
        limit.admit("http_400")
