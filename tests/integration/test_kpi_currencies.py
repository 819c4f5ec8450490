"""Revenue in a currency other than the app's reporting currency: never converted, never
silently dropped. The API names how many revenue events it left out, and the store's one
read API counts them for reconciliation. Real SQLite and PostgreSQL stores."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal
from typing import Any

import aiohttp
import orjson
import pytest

from postback_hub.kpi.api import create_kpi_app
from postback_hub.kpi.query import KpiQuery, run_query
from postback_hub.kpi.store import Consumed, KpiStore
from postback_hub.service.record import CallbackRecord
from tests.kpi_support import kpi_destinations, kpi_registry
from tests.support import NO_BROKER, callback_record, make_settings, serve_locally

pytestmark = pytest.mark.integration

TOKEN = "kpi-currency-test-token"
D = 1_700_006_400  # 2023-11-15T00:00:00Z
_DATES = "start_date=2023-11-15&end_date=2023-11-15"


def _event(n: int, **fields: str) -> CallbackRecord:
    return callback_record(n, D + n, "event", event="buy", **fields)


# Sent: 2 events in USD (2.50 + 1.25), 1 without a currency (0.75, taken as USD), 3 in
# EUR (never converted) and 1 ad revenue callback in GBP; one event without revenue.
_RECORDS = [
    _event(1, revenue="250", currency="USD"),
    _event(2, revenue_float="1.25", currency="USD"),
    _event(3, revenue_float="0.75"),
    _event(4, revenue_float="9", currency="EUR"),
    _event(5, revenue_float="9", currency="EUR"),
    _event(6, revenue_float="1", currency="EUR"),
    _event(7),
    callback_record(8, D + 8, "ad_revenue", revenue_float="0.5", currency="GBP"),
]


def _write(store: KpiStore) -> None:
    batch = [Consumed(0, i, r) for i, r in enumerate(_RECORDS)]
    store.write_batch("kpi", "callbacks", batch, 1e9)


def test_the_read_api_counts_revenue_left_out_of_a_currency(store: KpiStore) -> None:
    _write(store)
    result = run_query(store, KpiQuery("demo", date(2023, 11, 15), date(2023, 11, 15)))
    assert result.left_out("USD") == {"EUR": 3, "GBP": 1}
    assert result.left_out("EUR") == {"GBP": 1, "USD": 2}


@pytest.fixture
async def api(store: KpiStore) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    os.environ["KPI_CURRENCY_TEST_TOKEN"] = TOKEN
    kpi = {
        "currency": "USD",
        "tokens": {"reader": {"secret": {"env": "KPI_CURRENCY_TEST_TOKEN"}, "apps": ["demo"]}},
    }
    settings = make_settings(NO_BROKER, "callbacks", 0, kpi_destinations(), kpi_registry(), kpi=kpi)
    runner, port = await serve_locally(create_kpi_app(settings, store=store))
    headers = {"Authorization": f"Token token={TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        yield f"http://127.0.0.1:{port}/kpis/v1/demo", session
    await runner.cleanup()


async def _json(api: tuple[str, aiohttp.ClientSession], query: str) -> dict[str, Any]:
    base, session = api
    async with session.get(f"{base}?{query}") as response:
        assert response.status == 200
        body: dict[str, Any] = orjson.loads(await response.read())
        return body


async def test_the_answer_names_the_revenue_events_it_left_out(
    store: KpiStore, api: tuple[str, aiohttp.ClientSession]
) -> None:
    _write(store)
    body = await _json(api, f"{_DATES}&grouping=&kpis=revenue_events,revenue,ad_revenue")
    # USD and currency-less revenue only; every revenue event is counted as one.
    assert body["result_set"]["kpi_values"] == [6, 4.5, 0]
    warnings = body["result_parameters"]["warnings"]
    assert [(w["code"], w["currency"], w["revenue_events"]) for w in warnings] == [
        ("revenue_not_converted", "EUR", 3),
        ("revenue_not_converted", "GBP", 1),
    ]
    assert "3 revenue events in EUR" in warnings[0]["message"]
    assert "reporting_currency" in warnings[0]["message"]

    counts_only = await _json(api, f"{_DATES}&grouping=&kpis=installs,revenue_events")
    assert counts_only["result_parameters"]["warnings"] == []

    base, session = api
    async with session.get(f"{base}.csv?{_DATES}&grouping=&kpis=revenue") as response:
        assert response.status == 200
        rows = list(csv.reader(io.StringIO(await response.text())))
        assert rows[0] == ["revenue"]
        assert Decimal(rows[1][0]) == Decimal("2.50") + Decimal("1.25") + Decimal("0.75")
        assert response.headers["X-Kpi-Warnings"] == (
            "revenue_not_converted EUR=3, revenue_not_converted GBP=1"
        )
