"""Slow and greedy clients against a real receiver process: raw sockets, short deadlines.

Stalled big headers, slowloris and idle keep-alive connections are closed within the
configured deadlines while an ordinary client is served all along, and the worker's
resident memory stays bounded.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from postback_hub.service.localkafka import LocalKafka, free_port
from tests.support import SECRET, receiver_process, settings_document, wait_http_ok, write_config

pytestmark = pytest.mark.integration

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0
KEEPALIVE_TIMEOUT_S = 2.0
MAX_HEADER_BYTES = 16 * 1024
# How long past its deadline a connection may take to be closed (a loaded machine).
SLACK_S = 5.0
RSS_LIMIT_MB = 150


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise LookupError("no VmRSS")


async def _read_until_closed(reader: asyncio.StreamReader, bound_s: float) -> bytes:
    """Everything the server sends until it closes the connection (or the bound passes)."""
    received = b""
    async with asyncio.timeout(bound_s):
        while chunk := await reader.read(65536):
            received += chunk
    return received


def _status(answer: bytes) -> int | None:
    first = answer.split(b"\r\n", 1)[0].split()
    return int(first[1]) if len(first) >= 2 and first[0].startswith(b"HTTP/") else None


def _error_code(answer: bytes) -> str:
    body = answer.split(b"\r\n\r\n", 1)[1]
    code: str = orjson.loads(body)["error"]["code"]
    return code


class Outcome:
    def __init__(self) -> None:
        self.closed_after: list[float] = []
        self.statuses: list[int | None] = []
        self.codes: list[str] = []


async def _big_headers(port: int, outcome: Outcome) -> None:
    """Header lines past the byte cap, sent in pieces, never finished."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: hub\r\n")
    line = b"X-Filler: " + b"a" * 4000 + b"\r\n"
    try:
        for _ in range(2 * MAX_HEADER_BYTES // len(line) + 1):
            writer.write(line)
            await writer.drain()
            await asyncio.sleep(0.05)
    except ConnectionError:
        pass  # closed by the server mid-way, as it should be
    answer = await _read_until_closed(reader, HEADER_TIMEOUT_S + SLACK_S)
    outcome.closed_after.append(time.monotonic() - started)
    outcome.statuses.append(_status(answer))
    outcome.codes.append(_error_code(answer))
    writer.close()


async def _stalled_headers(port: int, outcome: Outcome) -> None:
    """Headers under the cap, then nothing: the header deadline closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: hub\r\nX-Filler: " + b"b" * 8000 + b"\r\n")
    await writer.drain()
    answer = await _read_until_closed(reader, HEADER_TIMEOUT_S + SLACK_S)
    outcome.closed_after.append(time.monotonic() - started)
    outcome.statuses.append(_status(answer))
    outcome.codes.append(_error_code(answer))
    writer.close()


async def _slowloris(port: int, outcome: Outcome) -> None:
    """One byte every 0.2 s, forever: still closed at the header deadline."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    closed = asyncio.create_task(_read_until_closed(reader, HEADER_TIMEOUT_S + SLACK_S))
    head = b"GET /healthz HTTP/1.1\r\nHost: hub\r\nX-Slow: " + b"c" * 10_000
    try:
        for byte in head:
            if closed.done():
                break
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.2)
    except ConnectionError:
        pass
    answer = await closed
    outcome.closed_after.append(time.monotonic() - started)
    outcome.statuses.append(_status(answer))
    outcome.codes.append(_error_code(answer))
    writer.close()


async def _slow_body(port: int, outcome: Outcome) -> None:
    """A complete head, then a body that never arrives: the body deadline answers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(
        f"POST /v1/adjust/demo?secret={SECRET} HTTP/1.1\r\nHost: hub\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n"
        "activity_kind=install&".encode()
    )
    await writer.drain()
    answer = await _read_until_closed(reader, BODY_TIMEOUT_S + SLACK_S)
    outcome.closed_after.append(time.monotonic() - started)
    outcome.statuses.append(_status(answer))
    outcome.codes.append(_error_code(answer))
    writer.close()


async def _idle_keepalive(port: int, outcome: Outcome) -> None:
    """One complete request, then an idle keep-alive connection: closed after the timeout."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n")
    await writer.drain()
    first = await reader.readuntil(b"}")  # the whole (small) JSON answer
    started = time.monotonic()
    rest = await _read_until_closed(reader, KEEPALIVE_TIMEOUT_S + SLACK_S)
    outcome.closed_after.append(time.monotonic() - started)
    outcome.statuses.append(_status(first))
    outcome.codes.append("" if rest == b"" else "unexpected bytes")
    writer.close()


async def test_slow_and_idle_connections_are_closed_while_others_are_served(
    tmp_path: Path, kafka_broker: LocalKafka, topic: str
) -> None:
    port = free_port()
    receiver = {
        "header_timeout_s": HEADER_TIMEOUT_S,
        "keepalive_timeout_s": KEEPALIVE_TIMEOUT_S,
        "max_header_bytes": MAX_HEADER_BYTES,
        "body_timeout_s": BODY_TIMEOUT_S,
    }
    document = settings_document(
        kafka_broker.bootstrap_servers, topic, port, receiver=receiver, logging={"level": "INFO"}
    )
    config = write_config(tmp_path / "config.toml", document)
    with receiver_process(config, tmp_path / "receiver.log") as process:
        await wait_http_ok(f"http://127.0.0.1:{port}/readyz")
        big, stalled, slow, body, idle = Outcome(), Outcome(), Outcome(), Outcome(), Outcome()
        served: list[int] = []
        rss: list[float] = []
        attack_over = asyncio.Event()

        async def ordinary_client() -> None:
            async with aiohttp.ClientSession() as session:
                i = 0
                while not attack_over.is_set():
                    url = (
                        f"http://127.0.0.1:{port}/v1/adjust/demo?secret={SECRET}"
                        f"&activity_kind=install&adid={i + 1:032x}"
                    )
                    async with session.get(url) as response:
                        served.append(response.status)
                    rss.append(_rss_mb(process.pid))
                    i += 1
                    await asyncio.sleep(0.05)

        client = asyncio.create_task(ordinary_client())
        attackers = [
            *(_big_headers(port, big) for _ in range(100)),
            *(_stalled_headers(port, stalled) for _ in range(100)),
            *(_slowloris(port, slow) for _ in range(100)),
            *(_slow_body(port, body) for _ in range(50)),
            *(_idle_keepalive(port, idle) for _ in range(200)),
        ]
        await asyncio.gather(*attackers)
        attack_over.set()
        await client
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0

    assert big.statuses == [431] * 100
    assert set(big.codes) == {"headers_too_large"}
    # A slow request may be the network's fault: 503, which Adjust retries, never a 4xx.
    assert stalled.statuses == [503] * 100
    assert set(stalled.codes) == {"request_timeout"}
    assert slow.statuses == [503] * 100
    assert set(slow.codes) == {"request_timeout"}
    assert body.statuses == [503] * 50
    assert set(body.codes) == {"request_timeout"}
    assert idle.statuses == [200] * 200
    assert set(idle.codes) == {""}
    # Closed by the server, each within its deadline (plus slack for a loaded machine):
    # _read_until_closed raises TimeoutError past the bound, so reaching here says so.
    assert max(stalled.closed_after + slow.closed_after) < HEADER_TIMEOUT_S + SLACK_S
    assert max(body.closed_after) < BODY_TIMEOUT_S + SLACK_S
    assert max(idle.closed_after) < KEEPALIVE_TIMEOUT_S + SLACK_S
    assert len(served) > 10
    assert set(served) == {200}
    assert max(rss) < RSS_LIMIT_MB
    print(
        f"\nslow clients: big headers closed after max {max(big.closed_after):.2f}s, "
        f"stalled {max(stalled.closed_after):.2f}s, slowloris {max(slow.closed_after):.2f}s, "
        f"slow body {max(body.closed_after):.2f}s, "
        f"idle keep-alive {max(idle.closed_after):.2f}s; {len(served)} ordinary requests "
        f"answered 200 meanwhile; worker RSS max {max(rss):.0f} MB"
    )


async def test_connections_past_the_cap_are_refused_with_503(
    tmp_path: Path, kafka_broker: LocalKafka, topic: str
) -> None:
    port = free_port()
    receiver = {"max_connections": 20, "keepalive_timeout_s": KEEPALIVE_TIMEOUT_S}
    document = settings_document(kafka_broker.bootstrap_servers, topic, port, receiver=receiver)
    config = write_config(tmp_path / "config.toml", document)
    with receiver_process(config, tmp_path / "receiver.log") as process:
        await wait_http_ok(f"http://127.0.0.1:{port}/readyz")
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(20)]
        for held_reader, held_writer in held:  # each accepted and answered, then idle
            held_writer.write(b"GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n")
            assert _status(await held_reader.readuntil(b"}")) == 200
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer = await _read_until_closed(reader, SLACK_S)
        writer.close()
        assert _status(answer) == 503
        assert b"\r\nRetry-After: " in answer
        assert _error_code(answer) == "too_many_connections"
        # Once the idle ones time out, new connections are served again.
        for held_reader, held_writer in held:
            assert await _read_until_closed(held_reader, KEEPALIVE_TIMEOUT_S + SLACK_S) == b""
            held_writer.close()
        await wait_http_ok(f"http://127.0.0.1:{port}/healthz", timeout=SLACK_S)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
