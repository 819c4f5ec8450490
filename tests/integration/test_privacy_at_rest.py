"""Per-app privacy options through the real receiver and broker: what is stored on Kafka
(value and key) holds no dropped field and only keyed hashes of the hashed ones."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import aiohttp
import orjson
import pytest

from postback_hub.service.app import PRODUCER
from postback_hub.service.localkafka import LocalKafka, free_port
from postback_hub.service.server import RunningReceiver, start_receiver
from tests.support import SECRET, SECRET_ENV, make_settings, read_records

pytestmark = pytest.mark.integration

KEY = "privacy-key-for-tests-0123456789ab"
KEY_ENV = "POSTBACK_HUB_TEST_PRIVACY_KEY"
ADID = "5a1b2c3d4e5f60718293a4b5c6d7e8f9"
IDFA = "AEBE52E7-03EE-455A-B3C4-E57283966239"
IDFV = "1E2D3C4B-5A69-4788-9A0B-C1D2E3F4A5B6"
IP = "203.0.113.77"
AGENT = "Dalvik/2.1.0 (Linux; U; Android 14; Pixel 8)"


def _hmac_hex(value: str) -> str:
    return hmac.new(KEY.encode(), value.encode(), hashlib.sha256).hexdigest()


@pytest.fixture
async def private_receiver(
    kafka_broker: LocalKafka, topic: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    monkeypatch.setenv(KEY_ENV, KEY)
    port = free_port()
    apps = {
        "private": {
            "secret": {"env": SECRET_ENV},
            "privacy": {
                "drop": ["ip_address", "user_agent"],
                "hash": ["adid", "idfv"],
                "hash_key": {"env": KEY_ENV},
            },
        },
        "plain": {"secret": {"env": SECRET_ENV}},
    }
    settings = make_settings(kafka_broker.bootstrap_servers, topic, port, apps=apps)
    running: RunningReceiver = await start_receiver(settings)
    await running.app[PRODUCER].wait_connected(30)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await running.shutdown()


async def test_the_stored_record_lacks_dropped_and_hashes_hashed_fields(
    private_receiver: str, kafka_broker: LocalKafka, topic: str
) -> None:
    query = urlencode(
        {
            "secret": SECRET,
            "activity_kind": "install",
            "adid": ADID,
            "idfa": IDFA,
            "idfv": IDFV,
            "ip_address": IP,
            "user_agent": AGENT,
            "country": "us",
            "created_at_milli": "1700000000123",
        }
    )
    answers = []
    async with aiohttp.ClientSession() as session:
        # The private app twice (as Adjust retries), then the same callback for an app
        # without privacy options.
        for app in ("private", "private", "plain"):
            async with session.get(f"{private_receiver}/v1/adjust/{app}?{query}") as response:
                assert response.status == 200, await response.text()
                answers.append(await response.json())
    messages = await read_records(kafka_broker.bootstrap_servers, topic, 3)
    assert len(messages) == 3
    by_app: dict[str, list[tuple[bytes, dict[str, object]]]] = {}
    for message in messages:
        assert message.key is not None
        assert message.value is not None
        record = orjson.loads(message.value)
        by_app.setdefault(record["app"], []).append((message.key, record))

    first, retry = by_app["private"]
    for key, record in (first, retry):
        raw = key + orjson.dumps(record)
        for secret_value in (ADID, IDFV, IP, "Dalvik"):
            assert secret_value.encode() not in raw
        assert record["device"] == {"adid": _hmac_hex(ADID), "idfa": IDFA, "idfv": _hmac_hex(IDFV)}
        assert record["attributes"] == {"country": "us"}
        assert key == f"private:{_hmac_hex(ADID)}".encode()
    # Adjust's retry is recognisable as one activity, and the fingerprint is the one of the
    # ids as received (README: sha256 of app, device key, kind, created_at ms, ...).
    parts = ["v1", "private", ADID, "install", "1700000000123", "", "", ""]
    expected = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]
    assert first[1]["fingerprint"] == retry[1]["fingerprint"] == expected
    assert answers[0]["fingerprint"] == expected
    [(plain_key, plain)] = by_app["plain"]
    assert plain_key == f"plain:{ADID}".encode()
    assert plain["device"] == {"adid": ADID, "idfa": IDFA, "idfv": IDFV}
    assert plain["attributes"] == {"country": "us", "ip_address": IP, "user_agent": AGENT}
