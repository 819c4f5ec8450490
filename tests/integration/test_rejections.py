"""Every kind of bad input: the right 4xx, a JSON body naming the field, nothing produced."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from yarl import URL

from tests.integration.conftest import Receiver
from tests.support import SECRET, topic_size

pytestmark = pytest.mark.integration

OK = f"secret={SECRET}&activity_kind=install&adid=0123456789abcdef0123456789abcdef"
MB = 1024 * 1024

# (case id, method, app, raw query, headers, body, status, error code, field)
MATRIX: list[tuple[str, str, str, str, dict[str, str], bytes, int, str, str | None]] = [
    ("unknown app", "GET", "nope", OK, {}, b"", 404, "unknown_app", "app"),
    (
        "missing secret",
        "GET",
        "demo",
        OK.split("&", 1)[1],
        {},
        b"",
        401,
        "missing_secret",
        "secret",
    ),
    (
        "wrong secret",
        "GET",
        "demo",
        OK.replace(SECRET, "guess"),
        {},
        b"",
        401,
        "invalid_secret",
        "secret",
    ),
    (
        "wrong bearer",
        "GET",
        "demo",
        OK.split("&", 1)[1],
        {"Authorization": "Bearer guess"},
        b"",
        401,
        "invalid_secret",
        "secret",
    ),
    ("source not allowed", "GET", "locked", OK, {}, b"", 403, "address_not_allowed", None),
    (
        "query over 1 MB",
        "GET",
        "demo",
        OK + "&pad=" + "x" * MB,
        {},
        b"",
        413,
        "payload_too_large",
        None,
    ),
    (
        "body over 1 MB",
        "POST",
        "demo",
        f"secret={SECRET}",
        {"Content-Type": "application/x-www-form-urlencoded"},
        b"activity_kind=install&adid=1&pad=" + b"x" * MB,
        413,
        "payload_too_large",
        None,
    ),
    ("invalid utf-8", "GET", "demo", OK + "&city=%FF%FE", {}, b"", 400, "invalid_utf8", "city"),
    (
        "broken escape",
        "GET",
        "demo",
        OK + "&city=%G1",
        {},
        b"",
        400,
        "invalid_percent_encoding",
        "city",
    ),
    (
        "malformed number",
        "GET",
        "demo",
        OK + "&session_count=many",
        {},
        b"",
        400,
        "invalid_value",
        "session_count",
    ),
    (
        "malformed timestamp",
        "GET",
        "demo",
        OK + "&created_at=2023-11-14",
        {},
        b"",
        400,
        "invalid_value",
        "created_at",
    ),
    (
        "malformed flag",
        "GET",
        "demo",
        OK + "&is_organic=yes",
        {},
        b"",
        400,
        "invalid_value",
        "is_organic",
    ),
    (
        "malformed revenue",
        "GET",
        "demo",
        OK + "&revenue=1e",
        {},
        b"",
        400,
        "invalid_value",
        "revenue",
    ),
    (
        "missing activity kind",
        "GET",
        "demo",
        f"secret={SECRET}&adid=0123456789abcdef0123456789abcdef",
        {},
        b"",
        400,
        "missing_field",
        "activity_kind",
    ),
    (
        "missing device id",
        "GET",
        "demo",
        f"secret={SECRET}&activity_kind=install",
        {},
        b"",
        400,
        "missing_field",
        "adid",
    ),
    (
        "zero idfa only",
        "GET",
        "demo",
        f"secret={SECRET}&activity_kind=install&idfa=00000000-0000-0000-0000-000000000000",
        {},
        b"",
        400,
        "missing_field",
        "adid",
    ),
    (
        "event without token",
        "GET",
        "demo",
        OK.replace("install", "event"),
        {},
        b"",
        400,
        "missing_field",
        "event",
    ),
    (
        "json not an object",
        "POST",
        "demo",
        f"secret={SECRET}",
        {"Content-Type": "application/json"},
        b'["install"]',
        400,
        "invalid_json",
        None,
    ),
    (
        "json malformed",
        "POST",
        "demo",
        f"secret={SECRET}",
        {"Content-Type": "application/json"},
        b'{"activity_kind": ',
        400,
        "invalid_json",
        None,
    ),
    (
        "unsupported media type",
        "POST",
        "demo",
        f"secret={SECRET}",
        {"Content-Type": "text/csv"},
        b"activity_kind,install",
        415,
        "unsupported_media_type",
        "Content-Type",
    ),
    ("wrong method", "PUT", "demo", OK, {}, b"", 405, "method_not_allowed", None),
    (
        "conflicting environment",
        "GET",
        "demo",
        OK + "&environment=production&environment=sandbox",
        {},
        b"",
        400,
        "conflicting_values",
        "environment",
    ),
    (
        "json nested too deeply",
        "POST",
        "demo",
        f"secret={SECRET}",
        {"Content-Type": "application/json"},
        b'{"activity_kind":"install","adid":"1","x":' + b'{"a":' * 300 + b"1" + b"}" * 301,
        400,
        "invalid_json",
        "x",
    ),
    (
        "body not gzip as declared",
        "POST",
        "demo",
        f"secret={SECRET}",
        {"Content-Type": "application/x-www-form-urlencoded", "Content-Encoding": "gzip"},
        b"activity_kind=install&adid=1",
        400,
        "invalid_body",
        None,
    ),
    (
        "record too large to store",
        "GET",
        "demo",
        OK + "&blob=" + "%01" * 300_000,
        {},
        b"",
        413,
        "record_too_large",
        None,
    ),
]


async def _raw_request(port: int, request_line: bytes) -> tuple[int, bytes, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request_line + b"\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), head, body


async def test_bad_input_matrix_leaves_the_topic_empty(receiver: Receiver) -> None:
    results: dict[str, Any] = {}
    async with aiohttp.ClientSession() as session:
        for case, method, app, query, headers, body, status, code, field in MATRIX:
            url = URL(f"{receiver.callback_url(app)}?{query}", encoded=True)
            async with session.request(method, url, headers=headers, data=body or None) as response:
                assert response.content_type == "application/json", case
                payload = await response.json()
                results[case] = (
                    response.status,
                    payload["error"]["code"],
                    payload["error"]["field"],
                )
                assert payload["error"]["message"], case
            assert results[case] == (status, code, field), case
            if status == 405:
                assert response.headers["Allow"]

    port = int(receiver.url.rsplit(":", 1)[1])
    # Not even valid HTTP: raw bytes in the request line. Still JSON, still a 400.
    status, head, body = await _raw_request(
        port, b"GET /v1/adjust/demo?" + OK.encode() + b"&city=\xc3\xa9 HTTP/1.1"
    )
    assert status == 400
    assert b"application/json" in head
    assert b'"malformed_request"' in body

    assert await topic_size(receiver.bootstrap_servers, receiver.topic) == 0


async def test_good_request_after_bad_ones_is_the_only_record(receiver: Receiver) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{receiver.callback_url()}?{OK}&created_at=x") as response:
            assert response.status == 400
        async with session.get(f"{receiver.callback_url()}?{OK}") as response:
            assert response.status == 200
    assert await topic_size(receiver.bootstrap_servers, receiver.topic) == 1
