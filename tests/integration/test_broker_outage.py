"""The broker goes away and comes back; the receiver answers 503 in bounded time and recovers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp
import pytest

from postback_hub.service.app import PRODUCER
from postback_hub.service.localkafka import LocalKafka, free_port
from postback_hub.service.server import start_receiver
from postback_hub.service.topics import ensure_topic
from tests.support import SECRET, eventually, make_settings, read_records

pytestmark = pytest.mark.integration

PRODUCE_TIMEOUT_S = 2.0


def _url(port: int, i: int) -> str:
    return (
        f"http://127.0.0.1:{port}/v1/adjust/demo?secret={SECRET}&activity_kind=install"
        f"&adid={i:032x}&created_at={1700000000 + i}"
    )


async def test_broker_stopped_then_restarted(make_broker: Callable[[], LocalKafka]) -> None:
    broker = make_broker()
    topic = "outage"
    await ensure_topic({"bootstrap_servers": broker.bootstrap_servers}, topic, 3)
    port = free_port()
    settings = make_settings(
        broker.bootstrap_servers, topic, port, produce_timeout_s=PRODUCE_TIMEOUT_S
    )
    running = await start_receiver(settings)
    await running.app[PRODUCER].wait_connected(30)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(_url(port, 1)) as response:
                assert response.status == 200, await response.text()

            await asyncio.to_thread(broker.stop)

            started = time.monotonic()
            async with session.get(_url(port, 2)) as response:
                elapsed = time.monotonic() - started
                assert response.status == 503
                assert response.headers["Retry-After"] == "30"
                assert (await response.json())["error"]["code"] == "kafka_unavailable"
            # Bounded: the produce timeout plus scheduling slack, not aiokafka's own retries.
            assert elapsed < PRODUCE_TIMEOUT_S + 3.0
            async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                assert response.status == 503
                assert (await response.json())["kafka"] is False

            await asyncio.to_thread(broker.start)

            # No receiver restart: requests succeed again once the producer reconnects.
            attempt = 100

            async def accepted_again() -> bool:
                nonlocal attempt
                attempt += 1  # a new activity each time: Adjust would retry the same one
                async with session.get(_url(port, attempt)) as response:
                    return response.status == 200

            await eventually(
                accepted_again, 60, interval=0.5, what="a callback accepted after the restart"
            )
            async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                assert response.status == 200
    finally:
        await running.shutdown()

    records = await read_records(broker.bootstrap_servers, topic, 2)
    adids = {r.key for r in records}
    # The acknowledged ones are there; an unacknowledged one may or may not be (Adjust retries it).
    assert f"demo:{1:032x}".encode() in adids
    assert f"demo:{attempt:032x}".encode() in adids


async def test_receiver_starts_while_broker_is_down(make_broker: Callable[[], LocalKafka]) -> None:
    broker = make_broker()
    await asyncio.to_thread(broker.stop)
    port = free_port()
    settings = make_settings(broker.bootstrap_servers, "late", port, produce_timeout_s=1.0)
    running = await start_receiver(settings)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(_url(port, 1)) as response:
                assert response.status == 503
                assert "Retry-After" in response.headers
            async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
            async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                assert response.status == 503
            await asyncio.to_thread(broker.start)
            await ensure_topic({"bootstrap_servers": broker.bootstrap_servers}, "late", 1)

            async def accepted() -> bool:
                async with session.get(_url(port, 2)) as response:
                    return response.status == 200

            await eventually(accepted, 60, interval=0.3, what="a callback accepted")
    finally:
        await running.shutdown()
