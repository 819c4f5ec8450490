"""Requests at the edge of HTTP, against a receiver behind a trusted proxy on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest

from postback_hub.service.app import PRODUCER
from postback_hub.service.localkafka import LocalKafka, free_port
from postback_hub.service.server import RunningReceiver, start_receiver
from tests.support import SECRET, make_settings

pytestmark = pytest.mark.integration

ADID = "0123456789abcdef0123456789abcdef"


@pytest.fixture
async def proxied_receiver(kafka_broker: LocalKafka, topic: str) -> AsyncIterator[int]:
    """A receiver that trusts loopback as its proxy; the port it listens on."""
    port = free_port()
    settings = make_settings(
        kafka_broker.bootstrap_servers,
        topic,
        port,
        receiver={"trusted_proxies": ["127.0.0.1/32"]},
    )
    running: RunningReceiver = await start_receiver(settings)
    await running.app[PRODUCER].wait_connected(30)
    try:
        yield port
    finally:
        await running.shutdown()


async def raw_request(port: int, head: bytes) -> tuple[int, dict[str, object]]:
    """Send one request as written (header lines exactly as given); status and JSON body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=15)
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    body = rest.partition(b"\r\n\r\n")[2]
    return int(status_line.split()[1]), orjson.loads(body)


async def test_a_forged_first_forwarded_for_line_does_not_pass_the_allowlist(
    proxied_receiver: int,
) -> None:
    # "locked" allows 203.0.113.0/24. The client forges that on the first line; our proxy
    # (loopback, trusted) appends the client's real address on a second line.
    path = f"/v1/adjust/locked?secret={SECRET}&activity_kind=install&adid={ADID}"
    head = (
        f"GET {path} HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n"
        "X-Forwarded-For: 203.0.113.5\r\n"
        "X-Forwarded-For: 198.51.100.9\r\n\r\n"
    ).encode()
    status, body = await raw_request(proxied_receiver, head)
    assert status == 403
    assert body["error"] == {
        "code": "address_not_allowed",
        "field": None,
        "message": "this source address may not post callbacks",
    }
    # The same chain from an allowed client on the proxy's line passes.
    allowed = head.replace(b"198.51.100.9", b"203.0.113.77")
    status, body = await raw_request(proxied_receiver, allowed)
    assert status == 200, body
