"""Fixtures for tests that run the receiver in this process against the real broker."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from postback_hub.kpi.store import KpiStore
from postback_hub.service.app import PRODUCER
from postback_hub.service.localkafka import LocalKafka, free_port
from postback_hub.service.server import RunningReceiver, start_receiver
from postback_hub.service.settings import Settings
from tests.fake_partner import FakePartner
from tests.fake_x import FakeX
from tests.support import make_settings


@dataclass
class Receiver:
    url: str
    settings: Settings
    running: RunningReceiver
    topic: str
    bootstrap_servers: str

    def callback_url(self, app: str = "demo") -> str:
        return f"{self.url}/v1/adjust/{app}"


@pytest.fixture
async def receiver(kafka_broker: LocalKafka, topic: str) -> AsyncIterator[Receiver]:
    port = free_port()
    settings = make_settings(kafka_broker.bootstrap_servers, topic, port)
    running = await start_receiver(settings)
    await running.app[PRODUCER].wait_connected(30)
    try:
        yield Receiver(
            f"http://127.0.0.1:{port}", settings, running, topic, kafka_broker.bootstrap_servers
        )
    finally:
        await running.shutdown()


# ------------------------------------------------------------------ fake partners


@pytest.fixture
async def partner() -> AsyncIterator[FakePartner]:
    fake = await FakePartner().start()
    yield fake
    await fake.stop()


@pytest.fixture
async def second_partner() -> AsyncIterator[FakePartner]:
    fake = await FakePartner().start()
    yield fake
    await fake.stop()


@pytest.fixture
async def fake_x() -> AsyncIterator[FakeX]:
    fake = await FakeX().start()
    yield fake
    await fake.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KpiStore]:
    """A KPI store on real SQLite, then on the suite's throwaway PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/kpi.sqlite3"
    else:
        url = request.getfixturevalue("postgres_url")
    opened = KpiStore.open(url)
    try:
        yield opened
    finally:
        opened.close()
