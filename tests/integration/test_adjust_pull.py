"""The pull client against strict fakes of the Report Service and the KPI Service v1."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from postback_hub.adjust.http import RetryPolicy
from postback_hub.adjust.pull import PullClient, PullError
from postback_hub.adjust.pull_parse import Binding, Query
from postback_hub.service.adjust_settings import AdjustAccount
from postback_hub.service.secrets import Secret
from tests.fake_adjust_reports import Activity, FakeAdjust

TOKEN = "adj-api-Tok3n-never-printed"
EVENTS = {"abc123": "Purchase", "def456": "Level Up"}
FAST = RetryPolicy(attempts=6, backoff_initial_s=0.01, backoff_max_s=0.05, retry_after_cap_s=30)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# Around the +05:30 day boundary of 2026-03-02 (18:30 UTC on 03-01) and -08:00's
# (08:00 UTC on 03-02).
ACTIVITIES = [
    Activity("install", at("2026-03-01T18:29:00"), "Facebook", "de"),
    Activity("install", at("2026-03-01T18:31:00"), "Facebook", "de"),
    Activity("install", at("2026-03-02T07:59:00"), "Google", "in"),
    Activity("install", at("2026-03-02T08:01:00"), "Google", "in"),
    Activity(
        "reattribution", at("2026-03-02T09:00:00"), "Google", "us", attribution="reattributed"
    ),
    Activity("event", at("2026-03-02T10:00:00"), "Facebook", "de", "abc123", Decimal("4.99")),
    Activity("event", at("2026-03-02T11:00:00"), "Facebook", "de", "abc123", Decimal("0.01")),
    Activity("event", at("2026-03-02T12:00:00"), "Organic", "us", "def456"),
    Activity("install", at("2026-03-02T12:00:00"), "Google", "in", environment="sandbox"),
    Activity("install", at("2026-03-02T12:30:00"), "Google", "in", attribution_type="engaged_ad"),
]


def expected(
    activities: list[Activity], offset: timedelta, start: date, end: date, types: set[str]
) -> dict[tuple[tuple[str, ...], str], Decimal]:
    """Adjust's numbers computed here from the activities, independently of the client."""
    out: Counter[tuple[tuple[str, ...], str]] = Counter()
    revenue: dict[tuple[tuple[str, ...], str], Decimal] = {}
    names = {
        "install": "installs",
        "reattribution": "reattributions",
        "reinstall": "reinstalls",
        "rejected_install": "rejected_installs",
        "rejected_reattribution": "rejected_reattributions",
    }
    for a in activities:
        day = (a.at + offset).date()
        if a.environment != "production" or a.attribution_type not in types:
            continue
        if not start <= day <= end:
            continue
        dims = (day.isoformat(), a.network, a.country)
        if a.kind == "event":
            out[(dims, f"events:{a.event_token}")] += 1
            key = (dims, f"revenue:{a.event_token}")
            revenue[key] = revenue.get(key, Decimal(0)) + a.revenue
        elif a.kind in names:
            out[(dims, names[a.kind])] += 1
    result = {key: Decimal(n) for key, n in out.items()}
    result.update(revenue)
    return nonzero(result)


def nonzero(values: dict[tuple[tuple[str, ...], str], Decimal]) -> dict[Any, Decimal]:
    return {k: v for k, v in values.items() if v != 0}


@pytest.fixture
async def fake() -> AsyncIterator[FakeAdjust]:
    server = await FakeAdjust(token=TOKEN, events=dict(EVENTS), activities=list(ACTIVITIES)).start()
    yield server
    await server.stop()


def account(fake: FakeAdjust, backend: str = "report_service", rate: float = 50.0) -> AdjustAccount:
    return AdjustAccount(
        api_token=Secret.of(TOKEN),
        report_service_url=fake.report_service_url,
        kpi_service_url=f"{fake.url}/kpis/v1",
        pull_backend=backend,  # type: ignore[arg-type]
        rate_limit_per_s=rate,
    )


def binding(offset: str, types: tuple[str, ...] = ("click", "impression")) -> Binding:
    return Binding(
        app="demo",
        app_token="abc123def456",
        utc_offset=offset,
        attribution_types=types,
        attribution_source="dynamic",
        attribution_status="all",
        currency="USD",
    )


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


QUERY = Query(date(2026, 3, 1), date(2026, 3, 2))


@pytest.mark.parametrize(
    ("backend", "fmt", "offset", "delta"),
    [
        ("report_service", "json", "+05:30", timedelta(hours=5, minutes=30)),
        ("report_service", "csv", "-08:00", timedelta(hours=-8)),
        ("kpi_service", "json", "-08:00", timedelta(hours=-8)),
        ("kpi_service", "csv", "+05:30", timedelta(hours=5, minutes=30)),
    ],
)
async def test_numbers_per_day_network_country_in_the_bindings_offset(
    fake: FakeAdjust, backend: str, fmt: str, offset: str, delta: timedelta
) -> None:
    async with PullClient(policy=FAST, sleep=Sleeps()) as client:
        table = await client.pull(
            "main",
            account(fake, backend),
            binding(offset),
            QUERY,
            fmt=fmt,  # type: ignore[arg-type]
        )
    want = expected(ACTIVITIES, delta, QUERY.start, QUERY.end, {"click", "impression"})
    assert nonzero(table.values) == want
    for received in fake.received:
        scheme = "Bearer" if backend == "report_service" else "Token token="
        assert received.authorization is not None
        assert received.authorization.startswith(scheme)
        assert TOKEN not in "".join(received.params.values())


async def test_every_binding_setting_is_sent_explicitly(fake: FakeAdjust) -> None:
    rs_binding = Binding(
        app="demo",
        app_token="abc123def456",
        utc_offset="+05:45",
        attribution_types=("click", "engaged_ad"),
        attribution_source="first",
        attribution_status="false",
        currency="USD",
        ad_revenue_sources=("applovin_max_sdk",),
    )
    async with PullClient(policy=FAST, sleep=Sleeps()) as client:
        await client.pull("main", account(fake), rs_binding, QUERY)
    report = next(r for r in fake.received if r.path.endswith("/report")).params
    assert report["utc_offset"] == "+05:45"
    assert report["attribution_types"] == "click,engaged_ad"
    assert report["attribution_source"] == "first"
    assert report["reattributed"] == "false"
    assert report["currency"] == "USD"
    assert report["sandbox"] == "false"
    assert report["ad_revenue_sources"] == "applovin_max_sdk"
    assert report["app_token__in"] == "abc123def456"
    assert report["date_period"] == "2026-03-01:2026-03-02"


async def test_the_attribution_filters_reach_the_numbers(fake: FakeAdjust) -> None:
    async with PullClient(policy=FAST, sleep=Sleeps()) as client:
        table = await client.pull("main", account(fake), binding("+00:00", ("engaged_ad",)), QUERY)
    # Only the one engaged_ad install remains.
    assert nonzero(table.values) == {(("2026-03-02", "Google", "in"), "installs"): Decimal(1)}


async def test_pages_are_followed_and_capped(fake: FakeAdjust) -> None:
    fake.page_size = 2
    async with PullClient(policy=FAST, sleep=Sleeps()) as client:
        table = await client.pull("main", account(fake), binding("+00:00"), QUERY)
    want = expected(ACTIVITIES, timedelta(0), QUERY.start, QUERY.end, {"click", "impression"})
    assert nonzero(table.values) == want
    assert sum(1 for r in fake.received if r.path.endswith("/report")) > 2
    async with PullClient(policy=FAST, max_pages=2, sleep=Sleeps()) as client:
        with pytest.raises(PullError, match="more than 2 pages"):
            await client.pull("main", account(fake), binding("+00:00"), QUERY)


async def test_a_next_link_to_another_host_is_not_followed(fake: FakeAdjust) -> None:
    fake.page_size = 1
    fake.next_host = f"localhost:{fake.port}"  # same server, another host name
    async with PullClient(policy=FAST, sleep=Sleeps()) as client:
        with pytest.raises(PullError, match="points away") as caught:
            await client.pull("main", account(fake), binding("+00:00"), QUERY)
    assert TOKEN not in str(caught.value)
    assert sum(1 for r in fake.received if r.path.endswith("/report")) == 1


async def test_a_redirect_is_refused_and_the_token_stays(fake: FakeAdjust) -> None:
    fake.redirect_next(f"http://localhost:{fake.port}/reports-service/events")
    async with PullClient(policy=FAST, sleep=Sleeps()) as client:
        with pytest.raises(PullError, match="redirect") as caught:
            await client.pull("main", account(fake), binding("+00:00"), QUERY)
    assert TOKEN not in str(caught.value)
    assert TOKEN not in repr(caught.value)
    assert len(fake.received) == 1


async def test_429_503_504_are_retried_honouring_retry_after(fake: FakeAdjust) -> None:
    fake.fail_next(429, **{"Retry-After": "7"})
    fake.fail_next(503)
    fake.fail_next(504)
    sleeps = Sleeps()
    async with PullClient(policy=FAST, sleep=sleeps) as client:
        table = await client.pull("main", account(fake, "kpi_service"), binding("+00:00"), QUERY)
    want = expected(ACTIVITIES, timedelta(0), QUERY.start, QUERY.end, {"click", "impression"})
    assert nonzero(table.values) == want
    assert fake.answered[:4] == [429, 503, 504, 200]
    assert any(wait >= 7 for wait in sleeps.waits)


async def test_a_real_rate_limit_is_waited_out(fake: FakeAdjust) -> None:
    fake.max_per_s = 2
    fake.page_size = 1
    policy = RetryPolicy(attempts=10, backoff_initial_s=0.05, backoff_max_s=0.2)
    async with PullClient(policy=policy) as client:
        table = await client.pull("main", account(fake, rate=50.0), binding("+00:00"), QUERY)
    want = expected(ACTIVITIES, timedelta(0), QUERY.start, QUERY.end, {"click", "impression"})
    assert nonzero(table.values) == want
    assert 429 in fake.answered


async def test_a_wrong_token_is_a_clear_error_without_the_token(fake: FakeAdjust) -> None:
    fake.token = "another-token"
    async with PullClient(policy=FAST, sleep=Sleeps()) as client:
        with pytest.raises(PullError, match="401") as caught:
            await client.pull("main", account(fake, "kpi_service"), binding("+00:00"), QUERY)
    assert TOKEN not in str(caught.value)


async def test_kpi_service_refuses_what_it_cannot_express(fake: FakeAdjust) -> None:
    async with PullClient(policy=FAST, sleep=Sleeps()) as client:
        with pytest.raises(PullError, match="engaged_ad"):
            await client.pull(
                "main",
                account(fake, "kpi_service"),
                binding("+00:00", ("click", "engaged_ad")),
                QUERY,
            )
    assert fake.received == []


async def test_kpi_events_endpoint(fake: FakeAdjust) -> None:
    async with PullClient(policy=FAST, sleep=Sleeps()) as client:
        table = await client.kpi_events(
            "main", account(fake, "kpi_service"), binding("+00:00"), QUERY
        )
    want = {
        k: v
        for k, v in expected(
            ACTIVITIES, timedelta(0), QUERY.start, QUERY.end, {"click", "impression"}
        ).items()
        if ":" in k[1]
    }
    assert nonzero(table.values) == want


async def test_the_fakes_refuse_unknown_and_missing_parameters(fake: FakeAdjust) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as session:
        async with session.get(
            f"{fake.report_service_url}/report",
            params={
                "dimensions": "day",
                "metrics": "installs",
                "date_period": "2026-03-01:2026-03-02",
                "colour": "red",
            },
            headers=headers,
        ) as answer:
            assert answer.status == 400
            assert "colour" in (await answer.json())["detail"]
        async with session.get(
            f"{fake.url}/kpis/v1/abc123def456.json",
            params={"start_date": "2026-03-01", "end_date": "2026-03-02"},
            headers={"Authorization": f"Token token={TOKEN}"},
        ) as answer:
            assert answer.status == 400
            assert "utc_offset" in (await answer.json())["detail"]


async def test_pacing_spaces_requests_per_account(fake: FakeAdjust) -> None:
    sleeps = Sleeps()
    fake.page_size = 1
    async with PullClient(policy=FAST, sleep=sleeps) as client:
        await asyncio.gather(
            client.pull("main", account(fake, rate=10.0), binding("+00:00"), QUERY),
            client.pull("main", account(fake, rate=10.0), binding("+05:30"), QUERY),
        )
    # The pacer's sleep is the injected one: each request after the first waited its turn.
    assert len([w for w in sleeps.waits if w > 0]) >= len(fake.received) - 2


async def test_kpi_trackers_endpoint_narrows_to_one_network(fake: FakeAdjust) -> None:
    google = "google"  # the fake's tracker token of a network: its slug, cut to 6
    async with PullClient(policy=FAST, sleep=Sleeps()) as client:
        table = await client.kpi_tracker(
            "main", account(fake, "kpi_service"), binding("+00:00"), QUERY, google
        )
    google_only = [a for a in ACTIVITIES if a.network == "Google"]
    want = expected(google_only, timedelta(0), QUERY.start, QUERY.end, {"click", "impression"})
    assert nonzero(table.values) == want
    assert fake.received[-1].path == f"/kpis/v1/{fake.app_token}/trackers/{google}.json"
