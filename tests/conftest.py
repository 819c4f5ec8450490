"""Fixtures shared by the whole test suite.

Sections below are grouped by what they provide; add new fixtures to the matching
section (or a new, clearly named one) rather than to the end of the file.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Protocol

import pytest

from postback_hub.service.localkafka import LocalKafka, free_port
from postback_hub.service.topics import ensure_topic
from tests.postgres import LocalPostgres

# Figures the fault scenarios measure, shown in the run's terminal summary.
pytest_plugins = ["tests.figures"]

# ----------------------------------------------------------------------------
# Kafka broker
#
# One real broker (KRaft, single node) is shared by the whole session: starting a
# JVM costs a few seconds. Tests that stop, kill or otherwise damage a broker must
# use ``make_broker`` for a private one instead of touching ``kafka_broker``.
# ----------------------------------------------------------------------------


def _broker_ports() -> tuple[int, int]:
    port = free_port()
    controller_port = free_port()
    while controller_port == port:
        controller_port = free_port()
    return port, controller_port


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """The session's shared broker, started on free ports; stopped at session end."""
    port, controller_port = _broker_ports()
    broker = LocalKafka(
        tmp_path_factory.mktemp("kafka"), port=port, controller_port=controller_port
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class MakeBroker(Protocol):
    def __call__(self, *, start: bool = True, heap_mb: int = 256) -> LocalKafka: ...


@pytest.fixture
def make_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MakeBroker]:
    """Factory for private brokers (fresh ports and data dir), all stopped at teardown."""
    brokers: list[LocalKafka] = []

    def make(*, start: bool = True, heap_mb: int = 256) -> LocalKafka:
        port, controller_port = _broker_ports()
        broker = LocalKafka(
            tmp_path_factory.mktemp("kafka-extra"),
            port=port,
            controller_port=controller_port,
            heap_mb=heap_mb,
        )
        brokers.append(broker)
        if start:
            broker.start()
        return broker

    yield make
    for broker in brokers:
        broker.stop(timeout=10.0)


# ----------------------------------------------------------------------------
# Kafka topics
# ----------------------------------------------------------------------------

_TOPIC_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def unique_topic_name(test_name: str) -> str:
    """A fresh, valid topic name recognisable as belonging to ``test_name``."""
    # Kafka allows [A-Za-z0-9._-] up to 249 chars; '.' is dropped too because Kafka
    # warns that '.' and '_' collide in metric names.
    stem = _TOPIC_UNSAFE.sub("-", test_name).strip("-")[:180] or "topic"
    return f"{stem}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def topic(kafka_broker: LocalKafka, request: pytest.FixtureRequest) -> str:
    """A new 3-partition topic on ``kafka_broker``, ready for producers."""
    name = unique_topic_name(request.node.name)
    await ensure_topic({"bootstrap_servers": kafka_broker.bootstrap_servers}, name, 3)
    return name


# ----------------------------------------------------------------------------
# PostgreSQL
#
# One throwaway server (initdb + pg_ctl on a free port) for the session, started
# only by tests that ask for it; each test gets a fresh database of its own.
# ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[LocalPostgres]:
    server = LocalPostgres()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: LocalPostgres) -> str:
    """The URL of a new, empty database on the session's PostgreSQL server."""
    return postgres_server.create_database()
