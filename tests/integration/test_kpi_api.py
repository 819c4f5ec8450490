"""The KPI API over real SQLite and PostgreSQL stores: the seed's paths, shapes, auth,
groupings, CSV and JSON, shortcuts and refusals. Expected values are computed here
from the callbacks each test wrote."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp
import orjson
import pytest

from postback_hub.kpi.api import create_kpi_app
from postback_hub.kpi.store import Consumed, KpiStore
from postback_hub.service.record import CallbackRecord
from tests.kpi_support import kpi_destinations, kpi_registry
from tests.support import NO_BROKER, callback_record, make_settings, serve_locally

pytestmark = pytest.mark.integration

TOKEN = "kpi-reader-token-for-tests"
OTHER = "kpi-other-app-token"
D = 1_700_006_400  # 2023-11-15T00:00:00Z


@dataclass
class Api:
    url: str
    session: aiohttp.ClientSession

    async def get(
        self, path: str, *, token: str | None = TOKEN, **headers: str
    ) -> tuple[int, bytes, str]:
        if token is not None:
            headers["Authorization"] = f"Token token={token}"
        async with self.session.get(self.url + path, headers=headers) as response:
            return response.status, await response.read(), response.content_type

    async def json(self, path: str) -> dict[str, Any]:
        status, body, _ = await self.get(path)
        assert status == 200, body
        parsed: dict[str, Any] = orjson.loads(body)
        return parsed


@pytest.fixture
async def api(store: KpiStore) -> AsyncIterator[Api]:
    os.environ["KPI_TEST_TOKEN"] = TOKEN
    os.environ["KPI_TEST_OTHER"] = OTHER
    kpi = {
        "currency": "USD",
        "tokens": {
            "reader": {"secret": {"env": "KPI_TEST_TOKEN"}, "apps": ["demo"]},
            "other": {"secret": {"env": "KPI_TEST_OTHER"}, "apps": ["locked"]},
        },
    }
    settings = make_settings(NO_BROKER, "callbacks", 0, kpi_destinations(), kpi_registry(), kpi=kpi)
    app = create_kpi_app(settings, app_tokens={"2eb2na2w54c3": "demo"}, store=store)
    runner, port = await serve_locally(app)
    async with aiohttp.ClientSession() as session:
        yield Api(f"http://127.0.0.1:{port}", session)
    await runner.cleanup()


def _write(store: KpiStore, records: list[CallbackRecord]) -> None:
    store.write_batch("kpi", "callbacks", [Consumed(0, i, r) for i, r in enumerate(records)], 1e9)


def _at(device: int, seconds: int, kind: str, **fields: str) -> CallbackRecord:
    return callback_record(device, 0, kind, created_at_milli=str(seconds * 1000), **fields)


_DATES = "start_date=2023-11-15&end_date=2023-11-15"


async def test_auth_like_the_seed(api: Api, store: KpiStore) -> None:
    path = f"/kpis/v1/demo?{_DATES}"
    assert (await api.get(path, token=None))[0] == 401
    status, body, _ = await api.get(path, token="wrong")
    assert status == 401
    assert orjson.loads(body)["error"]["field"] == "user_token"
    assert (await api.get(path, token=OTHER))[0] == 403
    status, _, _ = await api.get(f"{path}&user_token={TOKEN}", token=None)
    assert status == 200
    # The bound Adjust app token reaches the same app.
    assert (await api.get(f"/kpis/v1/2eb2na2w54c3?{_DATES}"))[0] == 200


async def test_overview_by_networks_countries_json_and_csv(api: Api, store: KpiStore) -> None:
    records = [
        _at(1, D + 10, "install", tracker_name="Net A::Camp 1", country="de"),
        _at(2, D + 20, "install", tracker_name="Net A::Camp 2", country="gb"),
        _at(3, D + 30, "install", tracker_name="Net B", country="de"),
        _at(4, D + 40, "session", tracker_name="Net A::Camp 1", country="de"),
        _at(5, D + 50, "install", tracker_name="Organic", is_organic="1", country="de"),
        _at(6, D + 60, "install", country="de"),  # blank tracker: a value of its own
        _at(7, D + 70, "install", tracker_name="Net A", country="de", environment="sandbox"),
    ]
    _write(store, records)
    body = await api.json(
        f"/kpis/v1/demo?{_DATES}&kpis=installs,sessions&grouping=networks,countries"
    )
    params, result = body["result_parameters"], body["result_set"]
    assert params["kpis"] == ["installs", "sessions"]
    assert (params["utc_offset"], params["sandbox"], params["reattributed"]) == (
        "00:00",
        False,
        "all",
    )
    names = {t["token"]: t["name"] for t in params["trackers"]}
    assert sorted(names.values()) == ["", "Net A", "Net B", "Organic"]
    got = {
        (names[n["token"]], c["country"]): c["kpi_values"]
        for n in result["networks"]
        for c in n["countries"]
    }
    assert got == {
        ("Net A", "de"): [1, 1],
        ("Net A", "gb"): [1, 0],
        ("Net B", "de"): [1, 0],
        ("Organic", "de"): [1, 0],
        ("", "de"): [1, 0],
    }
    assert result["currency"] == "USD"
    sandbox = await api.json(f"/kpis/v1/demo?{_DATES}&kpis=installs&grouping=&sandbox=true")
    assert sandbox["result_set"]["kpi_values"] == [1]

    status, text, content_type = await api.get(
        f"/kpis/v1/demo?{_DATES}&kpis=installs,sessions&grouping=networks,countries",
        Accept="text/csv",
    )
    assert (status, content_type) == (200, "text/csv")
    rows = list(csv.reader(io.StringIO(text.decode())))
    assert rows[0] == ["tracker_token", "network", "country", "installs", "sessions"]
    assert sorted((r[1], r[2], r[3], r[4]) for r in rows[1:]) == sorted(
        (n, c, str(v[0]), str(v[1])) for (n, c), v in got.items()
    )
    same = await api.get(
        f"/kpis/v1/demo.csv?{_DATES}&kpis=installs,sessions&grouping=networks,countries"
    )
    assert same[1] == text


async def test_tracker_drill_down(api: Api, store: KpiStore) -> None:
    records = [
        _at(1, D, "install", tracker_name="Net::Camp 1::Ad 1::Cr 1"),
        _at(2, D, "install", tracker_name="Net::Camp 1::Ad 2"),
        _at(3, D, "install", tracker_name="Net::Camp 2"),
    ]
    _write(store, records)
    top = await api.json(f"/kpis/v1/demo?{_DATES}&kpis=installs")
    (network,) = top["result_parameters"]["trackers"]
    assert (network["name"], network["has_subtrackers"]) == ("Net", True)
    assert top["result_set"]["trackers"] == [{"token": network["token"], "kpi_values": [3]}]
    campaigns = await api.json(f"/kpis/v1/demo/trackers/{network['token']}?{_DATES}&kpis=installs")
    by_name = {t["name"]: t for t in campaigns["result_parameters"]["trackers"]}
    values = {t["token"]: t["kpi_values"] for t in campaigns["result_set"]["trackers"]}
    assert {n: values[t["token"]] for n, t in by_name.items()} == {"Camp 1": [2], "Camp 2": [1]}
    assert by_name["Camp 1"]["has_subtrackers"]
    assert not by_name["Camp 2"]["has_subtrackers"]
    creatives = await api.json(f"/kpis/v1/demo?{_DATES}&kpis=installs&grouping=creatives")
    names = sorted(t["name"] for t in creatives["result_parameters"]["trackers"])
    assert names == ["", "", "Cr 1"]


@pytest.mark.parametrize(
    ("offset", "local_midnight"),
    [("-08:00", D + 8 * 3600), ("+05:30", D - 5 * 3600 - 1800)],
)
async def test_utc_offset_day_boundaries(
    api: Api, store: KpiStore, offset: str, local_midnight: int
) -> None:
    # 2023-11-15 00:00 local is `local_midnight` in UTC; the day's last millisecond is
    # 23:59:59.999 local, and the next millisecond is the 16th.
    last_ms = (local_midnight + 86_400) * 1000 - 1
    records = [
        callback_record(1, 0, "install", created_at_milli=str(local_midnight * 1000)),
        callback_record(2, 0, "install", created_at_milli=str(last_ms)),
        callback_record(3, 0, "install", created_at_milli=str(last_ms + 1)),
        callback_record(4, 0, "install", created_at_milli=str(local_midnight * 1000 - 1)),
    ]
    _write(store, records)
    query = f"start_date=2023-11-14&end_date=2023-11-16&utc_offset={offset.replace('+', '%2B')}"
    body = await api.json(f"/kpis/v1/demo?{query}&kpis=installs&grouping=day")
    assert body["result_parameters"]["utc_offset"] == offset.lstrip("+")
    got = {d["date"]: d["kpi_values"] for d in body["result_set"]["dates"]}
    assert got == {"2023-11-14": [1], "2023-11-15": [2], "2023-11-16": [1]}


async def test_weeks_months_and_dimensions(api: Api, store: KpiStore) -> None:
    records = [
        _at(1, D, "session", os_name="ios", device_type="phone"),  # Wed 15 Nov
        _at(2, D + 5 * 86_400, "session", os_name="android", device_type="tablet"),  # Mon 20
        _at(3, D + 17 * 86_400, "session", os_name="ios", device_type="phone"),  # Sat 2 Dec
    ]
    _write(store, records)
    dates = "start_date=2023-11-01&end_date=2023-12-31"
    weeks = await api.json(f"/kpis/v1/demo?{dates}&kpis=sessions&grouping=weeks")
    got = {d["date"]: d["kpi_values"] for d in weeks["result_set"]["dates"]}
    assert got == {"2023-11-13": [1], "2023-11-20": [1], "2023-11-27": [1]}
    months = await api.json(f"/kpis/v1/demo?{dates}&kpis=sessions&grouping=month,os_names")
    got2 = {
        (d["date"], o["os_name"]): o["kpi_values"]
        for d in months["result_set"]["dates"]
        for o in d["os_names"]
    }
    assert got2 == {
        ("2023-11-01", "android"): [1],
        ("2023-11-01", "ios"): [1],
        ("2023-12-01", "ios"): [1],
    }
    phones = await api.json(
        f"/kpis/v1/demo?{dates}&kpis=sessions&grouping=device_types&os_names=ios"
    )
    assert phones["result_set"]["device_types"] == [{"device_type": "phone", "kpi_values": [2]}]


async def test_revenue_event_kpis_and_their_shortcuts(api: Api, store: KpiStore) -> None:
    records = [
        _at(1, D, "event", event="aaa111", revenue="250", currency="USD"),  # cents: 2.50
        _at(2, D, "event", event="aaa111", revenue_float="1.25", currency="USD"),  # units
        _at(3, D, "event", event="aaa111"),  # no revenue
        _at(4, D, "event", event="bbb222", revenue_float="10", currency="USD"),
    ]
    _write(store, records)
    base = f"/kpis/v1/demo?{_DATES}&grouping=&kpis=revenue_events,revenue"
    body = await api.json(base + "&event_kpis=all_revenue|events|revenue_per_event")
    assert body["result_parameters"]["kpis"] == [
        "revenue_events",
        "revenue",
        "aaa111_revenue",
        "aaa111_events",
        "aaa111_revenue_per_event",
        "bbb222_revenue",
        "bbb222_events",
        "bbb222_revenue_per_event",
    ]
    assert body["result_set"]["kpi_values"] == [3, 13.75, 3.75, 3, 1.25, 10, 1, 10]
    raw = (await api.get(base + "&event_kpis=all_revenue,all_events"))[1]
    assert b"13.75" in raw  # an exact decimal, not a float's digits
    body = await api.json(
        base.replace("&kpis=revenue_events,revenue", "&kpis=")
        + "&event_kpis=all_revenue,all_events"
    )
    assert body["result_parameters"]["kpis"] == [
        "aaa111_revenue",
        "bbb222_revenue",
        "aaa111_events",
        "bbb222_events",
    ]
    events = await api.json(
        f"/kpis/v1/demo/events?{_DATES}&kpis=revenue,events,revenue_per_revenue_event"
    )
    got = {e["token"]: e["kpi_values"] for e in events["result_set"]["events"]}
    assert got == {"aaa111": [3.75, 3, 1.875], "bbb222": [10, 1, 10]}


@pytest.mark.parametrize(
    ("query", "field", "named"),
    [
        ("kpis=installs,daus", "kpis", "daus"),
        ("kpis=cost", "kpis", "cost"),
        ("kpis=cohort_revenue", "kpis", "cohort_revenue"),
        ("kpis=installs&event_kpis=abc_first_events", "event_kpis", "first_events"),
        ("kpis=nonsense", "kpis", "nonsense"),
        ("utc_offset=05:10", "utc_offset", "15 minutes"),
        ("grouping=partners", "grouping", "partners"),
        ("start_date=2023-13-01", "start_date", "YYYY-MM-DD"),
        ("attribution_type=click", "attribution_type", "all"),
    ],
)
async def test_refusals_name_the_parameter_and_why(
    api: Api, store: KpiStore, query: str, field: str, named: str
) -> None:
    status, body, _ = await api.get(f"/kpis/v1/demo?{query}")
    error = orjson.loads(body)["error"]
    assert (status, error["field"]) == (400, field)
    assert named in error["message"]


async def test_cohorts_are_refused(api: Api, store: KpiStore) -> None:
    status, body, _ = await api.get("/kpis/v1/demo/cohorts")
    assert status == 400
    assert "install date" in orjson.loads(body)["error"]["message"]


def test_revenue_figures_are_exact_in_the_store(store: KpiStore) -> None:
    _write(store, [_at(1, D, "event", event="e", revenue="1", currency="USD")])
    rows = store.aggregate(
        app="demo", environment="production", start_bucket=0, end_bucket=2**40, filters={}, group=[]
    )
    assert sum((r.revenue for r in rows), Decimal(0)) == Decimal("0.01")
