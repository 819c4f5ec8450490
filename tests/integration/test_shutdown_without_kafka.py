"""SIGTERM while Kafka is down: the worker answers 503 and exits within shutdown_timeout_s."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from postback_hub.service.localkafka import free_port
from postback_hub.service.topics import ensure_topic
from tests.conftest import MakeBroker
from tests.support import (
    SECRET,
    eventually,
    receiver_process,
    settings_document,
    wait_http_ok,
    write_config,
)

pytestmark = pytest.mark.integration

PRODUCE_TIMEOUT_S = 2.0
SHUTDOWN_TIMEOUT_S = 4.0


async def _reached(session: aiohttp.ClientSession, port: int) -> float:
    """Callback requests the worker has taken: being handled now, or answered."""
    async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    taken = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in ("postback_hub_inflight_requests", "postback_hub_requests_total"):
                taken += sample.value
    return taken


async def test_sigterm_with_the_broker_gone_exits_within_the_shutdown_timeout(
    tmp_path: Path, make_broker: MakeBroker
) -> None:
    broker = make_broker()
    topic = "shutdown-outage"
    await ensure_topic({"bootstrap_servers": broker.bootstrap_servers}, topic, 3)
    port = free_port()
    document = settings_document(
        broker.bootstrap_servers,
        topic,
        port,
        produce_timeout_s=PRODUCE_TIMEOUT_S,
        receiver={"shutdown_timeout_s": SHUTDOWN_TIMEOUT_S},
    )
    config = write_config(tmp_path / "config.toml", document)
    url = f"http://127.0.0.1:{port}/v1/adjust/demo?secret={SECRET}&activity_kind=install"
    with receiver_process(config, tmp_path / "receiver.log") as process:
        await wait_http_ok(f"http://127.0.0.1:{port}/readyz")
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}&adid={1:032x}") as response:
                assert response.status == 200
            await asyncio.to_thread(broker.kill)
            # Requests in flight when SIGTERM comes: each gets its answer (503), none hangs.
            in_flight = [
                asyncio.create_task(session.get(f"{url}&adid={i:032x}")) for i in range(2, 12)
            ]

            async def all_reached() -> bool:
                return await _reached(session, port) >= 1 + len(in_flight)

            # The signal comes once every one of them has reached the worker.
            await eventually(all_reached, interval=0.02, what="the requests reaching the worker")
            process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            responses = await asyncio.gather(*in_flight)
            assert {response.status for response in responses} == {503}
        # Bounded by shutdown_timeout_s (the drain is 0 here), plus process exit.
        try:
            returncode = await asyncio.to_thread(process.wait, SHUTDOWN_TIMEOUT_S + 5)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the worker did not exit {SHUTDOWN_TIMEOUT_S + 5}s after SIGTERM")
        print(f"\nexited {time.monotonic() - signalled:.1f}s after SIGTERM with Kafka down")
    assert returncode == 0
