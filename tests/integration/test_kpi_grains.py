"""The hourly and daily pre-aggregates against real SQLite and PostgreSQL: every range,
UTC offset and period grouping sums to what was written, wherever a query's pieces are
read from. Expected figures are computed here from the records each test wrote."""

from __future__ import annotations

import random
import sqlite3
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from postback_hub.kpi.store import Bucketed, Consumed, GroupExpr, KpiStore
from tests.support import callback_record

pytestmark = pytest.mark.integration

DAY = 86_400
T0 = 1_700_006_400  # 2023-11-15T00:00:00Z


def _written(store: KpiStore, n: int = 400) -> list[tuple[int, str, str, Decimal]]:
    """n callbacks at random moments over twelve days; (created_s, kind, country, revenue)."""
    rng = random.Random(7)
    sent: list[tuple[int, str, str, Decimal]] = []
    batch: list[Consumed] = []
    for i in range(n):
        created = T0 + rng.randrange(12 * DAY)
        kind = rng.choice(["install", "session", "event"])
        country = rng.choice(["de", "in"])
        fields = {"country": country}
        revenue = Decimal(0)
        if kind == "event":
            cents = rng.randint(1, 10_000)
            fields |= {"event": "tok", "revenue": str(cents), "currency": "USD"}
            revenue = Decimal(cents) / 100
        batch.append(Consumed(0, i, callback_record(i + 1, created, kind, **fields)))
        sent.append((created, kind, country, revenue))
    for first in range(0, n, 50):
        store.write_batch("kpi", "callbacks", batch[first : first + 50], DAY)
    return sent


def _read(
    store: KpiStore, start: int, end: int, group: list[GroupExpr]
) -> tuple[dict[tuple[object, ...], int], Decimal]:
    rows = store.aggregate(
        app="demo",
        environment="production",
        start_bucket=start,
        end_bucket=end,
        filters={},
        group=group,
    )
    counts: Counter[tuple[object, ...]] = Counter()
    for row in rows:
        counts[(*row.group, row.activity_kind)] += row.count
    return dict(counts), sum((row.revenue for row in rows), Decimal(0))


# (UTC offset, local days): whole days at 00:00 read the day table; +05:30 and -08:00
# combine days, hours and quarter hours; +05:45 is never whole hours.
@pytest.mark.parametrize("offset_s", [0, 19_800, -28_800, 20_700])
def test_local_days_sum_to_what_was_sent(store: KpiStore, offset_s: int) -> None:
    sent = _written(store)
    first_day = (T0 + offset_s) // DAY + 1  # local days wholly inside the data
    start, end = first_day * DAY - offset_s, (first_day + 3) * DAY - offset_s
    inside = [s for s in sent if start <= s[0] < end]
    by_day = Counter(((c + offset_s) // DAY, k) for c, k, _, _ in inside)
    by_country = Counter((country, k) for _, k, country, _ in inside)
    revenue = sum((r for *_, r in inside), Decimal(0))

    assert _read(store, start, end, [Bucketed(DAY, offset_s)]) == (dict(by_day), revenue)
    assert _read(store, start, end, ["country"]) == (dict(by_country), revenue)


@pytest.mark.parametrize("offset_s", [0, 19_800])
def test_local_hours_sum_to_what_was_sent(store: KpiStore, offset_s: int) -> None:
    sent = _written(store)
    start, end = T0 + DAY - offset_s, T0 + 2 * DAY - offset_s
    by_hour = Counter(((c + offset_s) // 3600, k) for c, k, _, _ in sent if start <= c < end)
    assert _read(store, start, end, [Bucketed(3600, offset_s)])[0] == dict(by_hour)


@pytest.mark.parametrize("offset_s", [0, 19_800])
def test_ten_days_with_a_whole_week_inside(store: KpiStore, offset_s: int) -> None:
    sent = _written(store)
    start, end = T0 - offset_s, T0 + 10 * DAY - offset_s  # T0 + 1 day is a week's first
    inside = [s for s in sent if start <= s[0] < end]
    by_country = Counter((country, k) for _, k, country, _ in inside)
    revenue = sum((r for *_, r in inside), Decimal(0))
    assert _read(store, start, end, ["country"]) == (dict(by_country), revenue)


def test_a_range_not_on_hour_boundaries(store: KpiStore) -> None:
    sent = _written(store)
    start, end = T0 + 3 * 900, T0 + 3 * DAY + 5 * 900
    expected = Counter((k,) for c, k, _, _ in sent if start <= c < end)
    assert _read(store, start, end, [])[0] == dict(expected)


def test_a_store_of_the_decimal_text_layout_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    columns = (
        "app, environment, bucket, activity_kind, event_token, tracker, network, campaign, "
        "adgroup, creative, country, os_name, device_type, attribution, rejection_reason, currency"
    )
    old = sqlite3.connect(path)
    old.execute(
        f"CREATE TABLE kpi_rollups ({columns}, count BIGINT NOT NULL, revenue TEXT NOT NULL, "
        f"revenue_events BIGINT NOT NULL, PRIMARY KEY ({columns}))"
    )
    rows = [
        (T0, "event", "tok", "USD", 2, "0.1000000001", 2),
        (T0 + 900, "event", "tok", "USD", 1, "2.5", 1),
        (T0 + DAY + 3600, "install", "", "", 5, "0", 0),
    ]
    for bucket, kind, token, currency, count, revenue, events in rows:
        old.execute(
            f"INSERT INTO kpi_rollups ({columns}, count, revenue, revenue_events) VALUES "  # noqa: S608
            "('demo', 'production', ?, ?, ?, '', 'Net', '', '', '', 'de', '', '', '', '', ?, "
            "?, ?, ?)",
            (bucket, kind, token, currency, count, revenue, events),
        )
    old.commit()
    old.close()

    store = KpiStore.open(f"sqlite:///{path}")
    try:
        whole_days = _read(store, T0, T0 + 2 * DAY, [Bucketed(DAY, 0)])  # the day table
        quarters = _read(store, T0, T0 + 2 * DAY, [Bucketed(DAY, 19_800)])  # 15 minutes
        second_day = T0 // DAY + 1
        assert whole_days == (
            {(T0 // DAY, "event"): 3, (second_day, "install"): 5},
            Decimal("2.6000000001"),
        )
        assert sum(quarters[0].values()) == 8
        assert quarters[1] == Decimal("2.6000000001")
    finally:
        store.close()


def test_coarser_tables_created_after_the_rollups_are_backfilled(store: KpiStore) -> None:
    sent = _written(store)
    with store.transaction() as tx:  # a store from before the hourly and daily tables
        tx.execute("DROP TABLE kpi_rollups_hourly")
        tx.execute("DROP TABLE kpi_rollups_daily")
        tx.execute("DROP TABLE kpi_rollups_weekly")
    store.ensure_schema()
    start, end = T0 + DAY, T0 + 4 * DAY
    inside = [s for s in sent if start <= s[0] < end]
    by_day = Counter((c // DAY, k) for c, k, _, _ in inside)
    revenue = sum((r for *_, r in inside), Decimal(0))
    assert _read(store, start, end, [Bucketed(DAY, 0)]) == (dict(by_day), revenue)
