"""Realistic Adjust callbacks, through the receiver, read back from the real broker."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest
from yarl import URL

from tests.integration.conftest import Receiver
from tests.support import SECRET, read_records

pytestmark = pytest.mark.integration

ADID = "9f0c3e5b8a7d4c2e1f0a9b8c7d6e5f40"
IDFA = "AEBE52E7-03EE-455A-B3C4-E57283966239"
GPS = "38400000-8cf0-11bd-b23e-10b96e40000d"


def _base_expected(**fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "schema": 1,
        "app": "demo",
        "environment": "production",
        "event_token": None,
        "revenue": None,
        "attributes": {},
        "partner_parameters": None,
        "publisher_parameters": None,
        "custom": {},
        "repeated": {},
    }
    record.update(fields)
    return record


# (query string exactly as Adjust would send it, the expected canonical record)
CASES: list[tuple[str, str, dict[str, Any]]] = [
    (
        "install-ios",
        f"activity_kind=install&adid={ADID}&idfa={IDFA}&idfv=&app_id=333903271"
        "&tracker_name=Twitter%3A%3AUS%20Launch%3A%3AAdgroup%201%3A%3ACreative%20A"
        "&adjust_tracker=abc123&city=S%C3%A3o%20Paulo&country=BR&region={region}"
        "&created_at=1700000000&installed_at=1699999990&is_organic=0&environment=production"
        "&ip_address=203.0.113.9&os_name=ios&os_version=17.1&device_name=iPhone15%2C2"
        "&partner_parameters=%7B%22campaign%22%3A%22black%20friday%22%2C%22n%22%3A%221%22%7D"
        "&my_custom_key=%E2%9C%93&repeat=a&repeat=b",
        _base_expected(
            activity_kind="install",
            created_at="2023-11-14T22:13:20.000Z",
            device={"adid": ADID, "idfa": IDFA},
            attributes={
                "app_id": "333903271",
                "tracker_name": "Twitter::US Launch::Adgroup 1::Creative A",
                "tracker": "abc123",
                "city": "São Paulo",
                "country": "br",
                "installed_at": "2023-11-14T22:13:10.000Z",
                "is_organic": False,
                "ip_address": "203.0.113.9",
                "os_name": "ios",
                "os_version": "17.1",
                "device_name": "iPhone15,2",
            },
            partner_parameters={"campaign": "black friday", "n": "1"},
            custom={"my_custom_key": "✓", "repeat": ["a", "b"]},
        ),
    ),
    (
        "session-android",
        f"activity_kind=session&adid={ADID}&gps_adid={GPS}&created_at_milli=1700000000123"
        "&created_at=1700000000&session_count=12&last_session_time=1699990000&environment=sandbox"
        "&city=M%C3%BCnchen&city=M%C3%BCnchen&tracking_enabled=1",
        _base_expected(
            activity_kind="session",
            environment="sandbox",
            created_at="2023-11-14T22:13:20.123Z",
            device={"adid": ADID, "gps_adid": GPS},
            attributes={
                "session_count": 12,
                "last_session_time": "2023-11-14T19:26:40.000Z",
                "city": "München",
                "tracking_enabled": True,
            },
        ),
    ),
    (
        "event-revenue-zero-idfa",
        f"activity_kind=event&adid={ADID}&idfa=00000000-0000-0000-0000-000000000000"
        "&event=abc123&event_name=Purchase&revenue=499&currency=eur&created_at=1700000001"
        "&publisher_parameters=not%20json&random=8264",
        _base_expected(
            activity_kind="event",
            created_at="2023-11-14T22:13:21.000Z",
            device={"adid": ADID},
            event_token="abc123",
            revenue={"amount": "4.99", "currency": "EUR"},
            attributes={"event_name": "Purchase", "random": "8264"},
            publisher_parameters="not json",
        ),
    ),
    (
        "reattribution",
        f"activity_kind=reattribution&adid={ADID}&gps_adid={GPS}&created_at=1700000002"
        "&reattributed_at=1700000002&is_reattributed=1&reattribution_attribution_window=168"
        "&inactive_user_definition=72&tracker_name=Net%3A%3ACamp",
        _base_expected(
            activity_kind="reattribution",
            created_at="2023-11-14T22:13:22.000Z",
            device={"adid": ADID, "gps_adid": GPS},
            attributes={
                "reattributed_at": "2023-11-14T22:13:22.000Z",
                "is_reattributed": True,
                "reattribution_attribution_window": 168,
                "inactive_user_definition": 72,
                "tracker_name": "Net::Camp",
            },
        ),
    ),
    (
        "rejected-install",
        f"activity_kind=rejected_install&adid={ADID}&created_at=1700000003"
        "&rejection_reason=too_many_engagements&revenue_float=0.5",
        _base_expected(
            activity_kind="rejected_install",
            created_at="2023-11-14T22:13:23.000Z",
            device={"adid": ADID},
            revenue={"amount": "0.5", "currency": None},
            attributes={"rejection_reason": "too_many_engagements"},
        ),
    ),
]


async def _fingerprints_match(receiver: Receiver, answers: list[dict[str, Any]]) -> None:
    records = await read_records(receiver.bootstrap_servers, receiver.topic, len(answers))
    assert len(records) == len(answers)
    by_fingerprint = {orjson.loads(r.value)["fingerprint"]: r for r in records}
    assert set(by_fingerprint) == {a["fingerprint"] for a in answers}


@pytest.mark.parametrize(("name", "query", "expected"), CASES, ids=[c[0] for c in CASES])
async def test_get_callback_round_trips(
    receiver: Receiver, name: str, query: str, expected: dict[str, Any]
) -> None:
    url = URL(f"{receiver.callback_url()}?secret={SECRET}&{query}", encoded=True)
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200, await response.text()
        answer = await response.json()
    assert answer["status"] == "queued"

    [message] = await read_records(receiver.bootstrap_servers, receiver.topic, 1)
    record = orjson.loads(message.value)
    assert message.key == f"demo:{ADID}".encode()
    assert record.pop("fingerprint") == answer["fingerprint"]
    assert (message.partition, message.offset) == (answer["partition"], answer["offset"])
    received_at = record.pop("received_at")
    assert received_at.endswith("Z")
    assert len(received_at) == len("2023-11-14T22:13:20.000Z")
    assert record == expected
    assert "secret" not in message.value.decode()


async def test_post_form_and_json_carry_the_same_keys(receiver: Receiver) -> None:
    form = {
        "activity_kind": "event",
        "adid": ADID,
        "event": "tok1",
        "created_at": "1700000000",
        "revenue_float": "1.25",
        "currency": "usd",
    }
    async with aiohttp.ClientSession() as session:
        async with session.post(
            receiver.callback_url(), data=form, headers={"Authorization": f"Bearer {SECRET}"}
        ) as response:
            assert response.status == 200, await response.text()
            by_form = await response.json()
        body = {**form, "revenue_float": 1.25, "is_organic": True}
        async with session.post(
            f"{receiver.callback_url()}?secret={SECRET}", json=body
        ) as response:
            assert response.status == 200, await response.text()
            by_json = await response.json()
    # Same activity, same fingerprint: downstream de-duplication can recognise it.
    assert by_form["fingerprint"] == by_json["fingerprint"]
    records = [
        orjson.loads(r.value)
        for r in await read_records(receiver.bootstrap_servers, receiver.topic, 2)
    ]
    assert len(records) == 2
    for record in records:
        assert record["revenue"] == {"amount": "1.25", "currency": "USD"}
        assert record["event_token"] == "tok1"
    assert sorted(r["attributes"].get("is_organic") for r in records if r["attributes"]) == [True]


async def test_concurrent_callbacks_are_all_acknowledged_and_stored(receiver: Receiver) -> None:
    async with aiohttp.ClientSession() as session:

        async def send(i: int) -> dict[str, Any]:
            url = (
                f"{receiver.callback_url()}?secret={SECRET}&activity_kind=event&event=t"
                f"&adid={i + 1:032x}&created_at={1700000000 + i}"
            )
            async with session.get(url) as response:
                assert response.status == 200
                return dict(await response.json())

        answers = await asyncio.gather(*(send(i) for i in range(200)))
    await _fingerprints_match(receiver, answers)


async def test_health_readiness_and_metrics(receiver: Receiver) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{receiver.url}/healthz") as response:
            assert response.status == 200
        async with session.get(f"{receiver.url}/readyz") as response:
            assert response.status == 200
            assert await response.json() == {"ready": True, "kafka": True, "draining": False}
        ok = f"{receiver.callback_url()}?secret={SECRET}&activity_kind=install&adid={ADID}"
        async with session.get(ok) as response:
            assert response.status == 200
        async with session.get(f"{receiver.callback_url()}?secret=wrong") as response:
            assert response.status == 401
        async with session.get(f"{receiver.url}/metrics") as response:
            text = await response.text()
    assert 'postback_hub_requests_total{app="demo",kind="install",status="200"} 1.0' in text
    assert 'postback_hub_requests_total{app="demo",kind="none",status="401"} 1.0' in text
    assert "postback_hub_produce_seconds_count 1.0" in text
    assert "postback_hub_inflight_requests 0.0" in text
