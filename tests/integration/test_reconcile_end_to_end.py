"""Reconciliation end to end: callbacks through the receiver and the real broker into the
KPI store, Adjust's numbers from strict fakes that were given every activity, and the
gaps reported exactly: what was withheld, what was answered 4xx, what came as sandbox
and what was never configured, per day, network, country and event token, on days
that cross the +05:30 and -08:00 boundaries. A lookback run sees a revision the fake
makes to an earlier day. The Adjust token is in no output and no log line."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from postback_hub.adjust.pull import PullClient
from postback_hub.adjust.reconcile import Tolerance
from postback_hub.adjust.reconcile_watch import ReconcileMetrics, WatchOptions, run_cycle
from postback_hub.consumers.kpi import build_sink
from postback_hub.kpi.reconciliations import history
from postback_hub.kpi.store import KpiStore
from postback_hub.service.app import PRODUCER
from postback_hub.service.localkafka import LocalKafka, free_port
from postback_hub.service.rejections import rejections_topic
from postback_hub.service.server import start_receiver
from postback_hub.service.topics import ensure_topic
from tests.fake_adjust_reports import Activity, FakeAdjust
from tests.kpi_support import kpi_registry
from tests.support import REPO, SECRET, SECRET_ENV, eventually, settings_document, write_config

pytestmark = pytest.mark.integration

TOKEN_ENV = "POSTBACK_HUB_TEST_ADJUST_TOKEN"
TOKEN = "adjust-Api-Tok3n-e2e-must-not-leak"
D1, D2 = date(2026, 3, 1), date(2026, 3, 2)
NETWORKS = ("Facebook", "Google", "Organic")
COUNTRIES = ("de", "in", "us")
EVENTS = {"abc123": "Purchase", "def456": "Level Up", "ghi789": "Tutorial"}
KPI_OF = {"install": "installs", "reattribution": "reattributions"}


@dataclass(frozen=True)
class Planned:
    activity: Activity
    fate: str  # sent, withheld, rejected, sandbox
    adid: int


@dataclass(frozen=True)
class AppCase:
    key: str
    app_token: str
    offset: timedelta
    utc_offset: str
    boundary_utc_hour: float  # the UTC time of day where local days change


CASES = (
    AppCase("demo", "abc123def456", timedelta(hours=5, minutes=30), "+05:30", 18.5),
    AppCase("west", "west0001", timedelta(hours=-8), "-08:00", 8.0),
)


def plan(case: AppCase, seed: int) -> list[Planned]:
    """Activities around the app's local day boundaries, each with its fate."""
    planned: list[Planned] = []
    index = 0
    base = datetime(2026, 2, 28, tzinfo=UTC)
    for day in range(4):
        for minutes in (-50, -7, -1, 1, 6, 44, 200, 400):
            when = base + timedelta(days=day, hours=case.boundary_utc_hour, minutes=minutes)
            for kind in ("install", "install", "reattribution", "event", "event", "event"):
                index += 1
                network = NETWORKS[(index + seed) % 3]
                country = COUNTRIES[(index * 7 + seed) % 3]
                token, revenue = "", Decimal(0)
                if kind == "event":
                    token = ("abc123", "def456", "ghi789")[index % 3]
                    revenue = (
                        Decimal(f"{index % 5}.{index % 100:02d}")
                        if token == "abc123"
                        else Decimal(0)
                    )
                attribution = "reattributed" if kind == "reattribution" else "installed"
                activity = Activity(
                    kind, when, network, country, token, revenue, attribution=attribution
                )
                if token == "ghi789":
                    fate = "withheld"  # no callback configured for this event at all
                elif index % 11 == 0:
                    fate = "withheld"
                elif index % 7 == 0:
                    fate = "rejected"
                elif index % 23 == 0:
                    fate = "sandbox"
                else:
                    fate = "sent"
                planned.append(Planned(activity, fate, seed * 100_000 + index))
    return planned


def callback_query(item: Planned, secret: str) -> dict[str, str]:
    a = item.activity
    query = {
        "secret": secret,
        "activity_kind": a.kind,
        "adid": f"{item.adid:032x}",
        "created_at": str(int(a.at.timestamp())),
        "tracker_name": f"{a.network}::Campaign {a.network}",
        "country": a.country,
        "environment": "sandbox" if item.fate == "sandbox" else "production",
    }
    if a.kind == "event":
        query["event"] = a.event_token
        if a.revenue:
            query["revenue_float"] = str(a.revenue)
            query["currency"] = "USD"
    return query


def kpis_of(a: Activity) -> list[tuple[str, Decimal]]:
    if a.kind == "event":
        out = [(f"events:{a.event_token}", Decimal(1))]
        if a.revenue:
            out.append((f"revenue:{a.event_token}", a.revenue))
        return out
    return [(KPI_OF[a.kind], Decimal(1))]


Key = tuple[str, str, str, str]  # day, kpi, scope, value


def expected_sides(
    items: list[Planned], case: AppCase
) -> tuple[dict[Key, Decimal], dict[Key, Decimal]]:
    """(ours, Adjust's) per (day, kpi, scope, value), computed from the plan alone."""
    ours: dict[Key, Decimal] = {}
    theirs: dict[Key, Decimal] = {}
    for item in items:
        a = item.activity
        day = (a.at + case.offset).date()
        if not D1 <= day <= D2:
            continue
        for kpi, value in kpis_of(a):
            for scope, name in (("all", ""), ("network", a.network), ("country", a.country)):
                key = (day.isoformat(), kpi, scope, name)
                theirs[key] = theirs.get(key, Decimal(0)) + value
                if item.fate == "sent":
                    ours[key] = ours.get(key, Decimal(0)) + value
    return ours, theirs


def counted_by_fate(items: list[Planned], case: AppCase, fate: str) -> Counter[tuple[str, str]]:
    """(local day, kind or KPI) -> how many activities had ``fate``."""
    out: Counter[tuple[str, str]] = Counter()
    for item in items:
        day = (item.activity.at + case.offset).date()
        if item.fate == fate and D1 <= day <= D2:
            out[(day.isoformat(), item.activity.kind)] += 1
            if fate == "sandbox":
                for kpi, _ in kpis_of(item.activity):
                    out[(day.isoformat(), kpi)] += 1
    return out


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/kpi.sqlite3"


@pytest.fixture
async def fakes() -> AsyncIterator[dict[str, FakeAdjust]]:
    servers = {
        case.key: await FakeAdjust(
            token=TOKEN, app_token=case.app_token, events=dict(EVENTS)
        ).start()
        for case in CASES
    }
    yield servers
    for server in servers.values():
        await server.stop()


def document(
    bootstrap: str, topic: str, port: int, database_url: str, fakes: dict[str, FakeAdjust]
) -> dict[str, Any]:
    apps = {
        case.key: {
            "secret": {"env": SECRET_ENV},
            "adjust": {
                "account": "main" if case.key == "demo" else "legacy",
                "app_token": case.app_token,
                "utc_offset": case.utc_offset,
                "attribution_types": ["click", "impression"],
                "currency": "USD",
            },
        }
        for case in CASES
    }
    doc = settings_document(bootstrap, topic, port, apps=apps)
    doc["kpi"] = {"database_url": database_url}
    doc["adjust"] = {
        "accounts": {
            "main": {
                "api_token": {"env": TOKEN_ENV},
                "report_service_url": fakes["demo"].report_service_url,
                "pull_backend": "report_service",
                "rate_limit_per_s": 50,
            },
            "legacy": {
                "api_token": {"env": TOKEN_ENV},
                "kpi_service_url": f"{fakes['west'].url}/kpis/v1",
                "pull_backend": "kpi_service",
                "rate_limit_per_s": 50,
            },
        }
    }
    return doc


@pytest.fixture
def token_env() -> Iterator[None]:
    os.environ[TOKEN_ENV] = TOKEN
    os.environ.setdefault(SECRET_ENV, SECRET)
    yield
    os.environ.pop(TOKEN_ENV, None)


async def run_cli(args: list[str], config: Path) -> subprocess.CompletedProcess[str]:
    """``postback-hub ARGS --config CONFIG`` as a real process, in a thread: the fakes,
    the receiver and the sink keep running on this event loop meanwhile."""
    env = {**os.environ, SECRET_ENV: SECRET, TOKEN_ENV: TOKEN}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "postback_hub", *args, "--config", str(config)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_reconciliation_reports_exactly_what_was_withheld_and_refused(
    kafka_broker: LocalKafka,
    topic: str,
    database_url: str,
    fakes: dict[str, FakeAdjust],
    token_env: None,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    await ensure_topic({"bootstrap_servers": bootstrap}, rejections_topic(topic), 1)
    port = free_port()
    doc = document(bootstrap, topic, port, database_url, fakes)
    config = write_config(tmp_path / "config.toml", doc)
    sink_doc = {**doc, "destinations": {"kpi": {"type": "kpi", "max_batch_wait_s": 0.05}}}
    from postback_hub.consumers.registry import parse_settings

    settings = parse_settings(sink_doc, registry=kpi_registry())
    plans = {case.key: plan(case, seed) for seed, case in enumerate(CASES, start=1)}
    for case in CASES:
        fakes[case.key].activities = [p.activity for p in plans[case.key]]

    receiver = await start_receiver(settings)
    await receiver.app[PRODUCER].wait_connected(30)
    sink = build_sink(settings, "kpi")
    await sink.start()
    sink_task = asyncio.create_task(sink.run())
    try:
        statuses: Counter[int] = Counter()
        async with aiohttp.ClientSession() as session:
            for case in CASES:
                for item in plans[case.key]:
                    if item.fate == "withheld":
                        continue
                    secret = "a-wrong-secret" if item.fate == "rejected" else SECRET
                    async with session.get(
                        f"http://127.0.0.1:{port}/v1/adjust/{case.key}",
                        params=callback_query(item, secret),
                    ) as answer:
                        statuses[answer.status] += 1
        sent = sum(1 for p in plans.values() for i in p if i.fate in ("sent", "sandbox"))
        refused = sum(1 for p in plans.values() for i in p if i.fate == "rejected")
        assert statuses == {200: sent, 401: refused}

        store = await asyncio.to_thread(KpiStore.open, database_url)
        try:

            async def counted() -> tuple[int, int]:
                def read() -> tuple[int, int]:
                    rows = store.read("SELECT coalesce(sum(count), 0) FROM kpi_rollups")
                    notes = store.read("SELECT coalesce(sum(count), 0) FROM kpi_rejections")
                    return int(rows[0][0]), int(notes[0][0])

                return await asyncio.to_thread(read)

            async def all_counted() -> bool:
                return await counted() == (sent, refused)

            await eventually(all_counted, 90, what="the sink counting every callback and note")

            # ---- the reconcile command, one app at a time, as an operator runs it
            outputs = []
            for case in CASES:
                result = await run_cli(
                    [
                        "reconcile",
                        "--app",
                        case.key,
                        "--from",
                        D1.isoformat(),
                        "--to",
                        D2.isoformat(),
                        "--json",
                        "--tolerance-pct",
                        "0",
                        "--tolerance-min",
                        "1",
                    ],
                    config,
                )
                outputs.append(result.stdout + result.stderr)
                assert result.returncode == 1, result.stderr
                check_report(json.loads(result.stdout), plans[case.key], case)
            # The plain table and `adjust pull`, too.
            table = await run_cli(
                ["reconcile", "--app", "demo", "--date", D1.isoformat(), "--gaps-only"], config
            )
            outputs.append(table.stdout + table.stderr)
            assert table.returncode == 1
            assert table.stdout.splitlines()[1].split()[:6] == [
                "day",
                "kpi",
                "scope",
                "value",
                "ours",
                "adjust",
            ]
            assert "no_callback" not in table.stdout  # codes are for JSON; the table has text
            pulled_out: dict[str, str] = {}
            for app, flag in (("demo", "--json"), ("west", "--csv")):
                pulled = await run_cli(
                    [
                        "adjust",
                        "pull",
                        "--app",
                        app,
                        "--from",
                        D1.isoformat(),
                        "--to",
                        D2.isoformat(),
                        "--grouping",
                        "day",
                        flag,
                    ],
                    config,
                )
                assert pulled.returncode == 0, pulled.stderr
                outputs.append(pulled.stdout + pulled.stderr)
                pulled_out[app] = pulled.stdout
            pulled_demo = json.loads(pulled_out["demo"])
            installs_d1 = sum(
                1
                for item in plans["demo"]
                if item.activity.kind == "install"
                and (item.activity.at + CASES[0].offset).date() == D1
            )
            row = next(r for r in pulled_demo["rows"] if r["day"] == D1.isoformat())
            assert row["installs"] == str(installs_d1)
            west_d2 = sum(
                1
                for item in plans["west"]
                if item.activity.kind == "install"
                and (item.activity.at + CASES[1].offset).date() == D2
            )
            header, *csv_rows = pulled_out["west"].splitlines()
            columns = header.split(",")
            d2_row = dict(
                zip(
                    columns,
                    next(r for r in csv_rows if r.startswith("2026-03-02")).split(","),
                    strict=True,
                )
            )
            assert d2_row["installs"] == str(west_d2)

            # ---- the scheduled mode: a lookback run picks up a revision of an earlier day
            caplog.set_level(logging.INFO)
            metrics = ReconcileMetrics()
            options = WatchOptions(tolerance=Tolerance(), lookback_days=3)
            first_now = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
            labels = {"app": "demo", "day": D1.isoformat(), "kpi": "installs"}
            async with PullClient() as client:
                await run_cycle(
                    settings, options, client=client, store=store, metrics=metrics, now=first_now
                )
                before = metrics.registry.get_sample_value("postback_hub_reconcile_adjust", labels)
                assert before == installs_d1
                late = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)  # 11:30 local on D1
                fakes["demo"].activities += [Activity("install", late, "Google", "de")] * 2
                await run_cycle(
                    settings,
                    options,
                    client=client,
                    store=store,
                    metrics=metrics,
                    now=first_now + timedelta(hours=1),
                )
            after = metrics.registry.get_sample_value("postback_hub_reconcile_adjust", labels)
            assert after == installs_d1 + 2
            checks = [
                r
                for r in await asyncio.to_thread(
                    history, store, "demo", D1.isoformat(), D1.isoformat()
                )
                if r.kpi == "installs" and r.scope == "all"
            ]
            # The two watch cycles' checks of D1 (the CLI runs, dated now, come later).
            first_ms = int(first_now.timestamp() * 1000)
            second_ms = first_ms + 3_600_000
            assert [(r.checked_ms, r.theirs) for r in checks if r.checked_ms <= second_ms] == [
                (first_ms, Decimal(installs_d1)),
                (second_ms, Decimal(installs_d1 + 2)),
            ]
            # Both CLI runs over D1 (the range and the single day) are in the history too.
            assert len([r for r in checks if r.checked_ms > second_ms]) == 2
            assert any(
                "reconciliation gap beyond tolerance" in r.getMessage() for r in caplog.records
            )
        finally:
            await asyncio.to_thread(store.close)
    finally:
        sink.stop()
        await sink_task
        await sink.close(5.0)
        await receiver.shutdown()

    everything = "\n".join(outputs) + "\n".join(
        f"{r.getMessage()} {r.__dict__}" for r in caplog.records
    )
    assert TOKEN not in everything
    for fake in fakes.values():
        assert all(r.authorization is not None and TOKEN in r.authorization for r in fake.received)


def check_report(report: dict[str, Any], items: list[Planned], case: AppCase) -> None:
    ours, theirs = expected_sides(items, case)
    rejected = counted_by_fate(items, case, "rejected")
    sandbox = counted_by_fate(items, case, "sandbox")
    lines = {(x["day"], x["kpi"], x["scope"], x["value"]): x for x in report["lines"]}
    assert set(lines) == set(ours) | set(theirs)
    gaps = 0
    for key, line in lines.items():
        want_ours, want_theirs = ours.get(key, Decimal(0)), theirs.get(key, Decimal(0))
        assert (Decimal(line["ours"]), Decimal(line["adjust"])) == (want_ours, want_theirs), key
        assert Decimal(line["difference"]) == want_ours - want_theirs
        codes = [c["code"] for c in line["causes"]]
        if want_ours == want_theirs:
            assert line["verdict"] == "match"
            continue
        gaps += 1
        assert line["verdict"] == "missing"
        day, kpi, _, _ = key
        kind = "event" if ":" in kpi else {v: k for k, v in KPI_OF.items()}[kpi]
        assert ("no_callback" in codes) == kpi.endswith("ghi789"), key
        n_rejected = rejected.get((day, kind), 0)
        assert ("rejected" in codes) == (n_rejected > 0), key
        if n_rejected:
            text = next(c["text"] for c in line["causes"] if c["code"] == "rejected")
            assert text.startswith(f"{n_rejected} {kind} callbacks answered 4xx")
        assert ("sandbox" in codes) == (sandbox.get((day, kpi), 0) > 0), key
        assert "incomplete" not in codes
        assert "settings" not in codes
    assert report["gaps"] == gaps
    assert gaps > 0
