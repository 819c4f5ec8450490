"""The KPI store against real SQLite and real PostgreSQL: exactly-once batches, de-dup,
exact revenue. Expected figures are computed here from what each test wrote."""

from __future__ import annotations

import random
from collections import Counter
from decimal import Decimal

import pytest

from postback_hub.kpi.store import Bucketed, Consumed, GroupExpr, KpiStore
from postback_hub.service.record import CallbackRecord
from tests.support import callback_record

pytestmark = pytest.mark.integration

DAY = 86_400
T0 = 1_700_006_400  # 2023-11-15T00:00:00Z


def _totals(store: KpiStore, group: list[GroupExpr] | None = None) -> dict[tuple[object, ...], int]:
    rows = store.aggregate(
        app="demo",
        environment="production",
        start_bucket=0,
        end_bucket=2**40,
        filters={},
        group=group or [],
    )
    totals: Counter[tuple[object, ...]] = Counter()
    for row in rows:
        totals[(*row.group, row.activity_kind)] += row.count
    return dict(totals)


def _revenue(store: KpiStore) -> Decimal:
    rows = store.aggregate(
        app="demo",
        environment="production",
        start_bucket=0,
        end_bucket=2**40,
        filters={},
        group=[],
    )
    return sum((row.revenue for row in rows), Decimal(0))


def _mixed(n: int, seed: int) -> tuple[list[CallbackRecord], Counter[tuple[str, str]], Decimal]:
    """n records of mixed kinds and countries, the expected count per (country, kind) and
    the expected revenue, both computed from the parameters chosen here."""
    rng = random.Random(seed)
    records: list[CallbackRecord] = []
    expected: Counter[tuple[str, str]] = Counter()
    revenue = Decimal(0)
    for i in range(n):
        kind = rng.choice(["install", "session", "event", "reattribution"])
        country = rng.choice(["de", "us", "in"])
        fields = {"country": country, "tracker_name": "Net::Camp"}
        if kind == "event":
            fields["event"] = "tok_buy"
            cents = rng.randint(1, 99_999)
            if i % 2:
                fields["revenue"] = str(cents)  # cents
                revenue += Decimal(cents) / 100
            else:
                fields["revenue_float"] = f"{cents // 100}.{cents % 100:02d}"  # units
                revenue += Decimal(cents) / 100
            fields["currency"] = "USD"
        records.append(callback_record(seed * 100_000 + i + 1, T0 + i * 37, kind, **fields))
        expected[(country, kind)] += 1
    return records, expected, revenue


def _consumed(records: list[CallbackRecord], partition: int = 0, first: int = 0) -> list[Consumed]:
    return [Consumed(partition, first + i, r) for i, r in enumerate(records)]


def test_counts_and_revenue_equal_what_was_written(store: KpiStore) -> None:
    records, expected, revenue = _mixed(300, seed=1)
    batch = _consumed(records)
    for start in range(0, len(batch), 64):
        store.write_batch("kpi", "callbacks", batch[start : start + 64], DAY)
    assert _totals(store, ["country"]) == {(c, k): n for (c, k), n in expected.items()}
    assert _revenue(store) == revenue
    assert store.stored_offsets("kpi", "callbacks") == {0: 300}


def test_a_batch_written_twice_or_overlapping_changes_nothing(store: KpiStore) -> None:
    records, expected, _ = _mixed(120, seed=2)
    batch = _consumed(records, partition=2, first=1000)
    store.write_batch("kpi", "callbacks", batch[:80], DAY)
    again = store.write_batch("kpi", "callbacks", batch[:80], DAY)
    assert (again.counted, again.already_applied) == (0, 80)
    # A rebalance hands the partition over mid-way: the next batch overlaps.
    overlap = store.write_batch("kpi", "callbacks", batch[40:], DAY)
    assert (overlap.counted, overlap.already_applied) == (40, 40)
    assert _totals(store, ["country"]) == {(c, k): n for (c, k), n in expected.items()}
    assert store.stored_offsets("kpi", "callbacks") == {2: 1120}


def test_an_adjust_duplicate_counts_once(store: KpiStore) -> None:
    original = callback_record(7, T0, "install", country="de")
    retry = callback_record(7, T0, "install", country="de")  # Adjust's retry: same activity
    assert retry.fingerprint == original.fingerprint
    store.write_batch("kpi", "callbacks", [Consumed(0, 0, original), Consumed(0, 1, retry)], DAY)
    store.write_batch("kpi", "callbacks", [Consumed(1, 0, retry)], DAY)
    assert _totals(store) == {("install",): 1}


def test_fingerprints_are_forgotten_after_the_window(store: KpiStore) -> None:
    first = callback_record(8, T0, "session")
    store.write_batch("kpi", "callbacks", [Consumed(0, 0, first)], 60.0)
    # A later record advances the store's clock (received_at) past the 60 s window.
    later = callback_record(9, T0 + 10, "session")
    later.received_at = "2099-01-01T00:00:00.000Z"
    store.write_batch("kpi", "callbacks", [Consumed(0, 1, later)], 60.0)
    store.write_batch("kpi", "callbacks", [Consumed(0, 2, first)], 60.0)
    assert _totals(store) == {("session",): 3}


def test_revenue_is_exact(store: KpiStore) -> None:
    amounts = ["0.1"] * 10 + ["123456789012345678.123456789"]
    records = [
        callback_record(100 + i, T0, "event", event="tok", revenue_float=a, currency="EUR")
        for i, a in enumerate(amounts)
    ]
    for i, record in enumerate(records):
        store.write_batch("kpi", "callbacks", [Consumed(0, i, record)], DAY)
    assert _revenue(store) == Decimal("123456789012345679.123456789")


def test_unreadable_messages_advance_the_offset(store: KpiStore) -> None:
    record = callback_record(11, T0, "install")
    store.write_batch("kpi", "callbacks", [Consumed(0, 0, None), Consumed(0, 1, record)], DAY)
    assert store.stored_offsets("kpi", "callbacks") == {0: 2}
    assert _totals(store) == {("install",): 1}


def test_local_days_at_an_offset(store: KpiStore) -> None:
    # 2023-11-15 18:29:59.999Z is 23:59:59.999 at +05:30; 18:30Z is the next local day.
    last_moment = callback_record(
        12, T0, "install", created_at_milli=str((T0 + 66_599) * 1000 + 999)
    )
    next_day = callback_record(13, T0, "install", created_at_milli=str((T0 + 66_600) * 1000))
    store.write_batch(
        "kpi", "callbacks", [Consumed(0, 0, last_moment), Consumed(0, 1, next_day)], DAY
    )
    days = _totals(store, [Bucketed(DAY, 19_800)])
    local_day = (T0 + 19_800) // DAY
    assert days == {(local_day, "install"): 1, (local_day + 1, "install"): 1}
