"""The KPI store's rejection counts, reconciliation history and last activity, on real
SQLite and real PostgreSQL."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from postback_hub.kpi.reconciliations import ResultRow, history, last_activity, save
from postback_hub.kpi.rejections import NoteMessage, counts_by_day, write_notes
from postback_hub.kpi.store import Consumed, KpiStore
from postback_hub.service.rejections import note_of
from tests.support import callback_record

pytestmark = pytest.mark.integration

T0 = 1_772_323_200  # 2026-03-01T00:00:00Z


def test_rejection_notes_are_counted_once_per_local_day(store: KpiStore) -> None:
    notes = [
        # 18:29 and 18:31 UTC fall on different +05:30 days.
        note_of("demo", "install", "invalid_secret", 401, T0 + 18 * 3600 + 29 * 60),
        note_of("demo", "install", "invalid_secret", 401, T0 + 18 * 3600 + 31 * 60),
        note_of("demo", "install", "missing_device_id", 400, T0 + 18 * 3600 + 31 * 60),
        note_of("demo", "event", "invalid_secret", 401, T0 + 3600),
        note_of("other", "install", "invalid_secret", 401, T0 + 3600),
    ]
    batch = [NoteMessage(0, offset, note) for offset, note in enumerate(notes)]
    batch.append(NoteMessage(0, len(notes), None))  # unreadable: skipped, offset still advances
    assert write_notes(store, "kpi", "cb.rejections", batch) == 5
    # The same batch again (a crash after the commit): nothing is added.
    assert write_notes(store, "kpi", "cb.rejections", batch) == 0
    ist = 5 * 3600 + 30 * 60
    by_day = counts_by_day(store, "demo", date(2026, 3, 1), date(2026, 3, 2), ist)
    assert by_day == {
        (date(2026, 3, 1), "install"): {"invalid_secret": 1},
        (date(2026, 3, 2), "install"): {"invalid_secret": 1, "missing_device_id": 1},
        (date(2026, 3, 1), "event"): {"invalid_secret": 1},
    }
    utc = counts_by_day(store, "demo", date(2026, 3, 1), date(2026, 3, 1), 0)
    assert utc[(date(2026, 3, 1), "install")] == {"invalid_secret": 2, "missing_device_id": 1}


def test_reconciliation_history_keeps_every_check(store: KpiStore) -> None:
    first = ResultRow(
        "demo",
        "2026-03-01",
        "installs",
        "all",
        "",
        Decimal(95),
        Decimal(100),
        "missing",
        ("rejected",),
    )
    second = ResultRow(
        "demo", "2026-03-01", "installs", "all", "", Decimal(95), Decimal(103), "missing", ()
    )
    revenue = ResultRow(
        "demo",
        "2026-03-01",
        "revenue:abc",
        "network",
        "X",
        Decimal("10.015"),
        Decimal("10.015"),
        "match",
        (),
    )
    save(store, 1000, [first, revenue])
    save(store, 2000, [second])
    rows = history(store, "demo", "2026-03-01", "2026-03-01")
    assert [(r.checked_ms, r.kpi, r.theirs, r.causes) for r in rows] == [
        (1000, "installs", Decimal(100), ("rejected",)),
        (1000, "revenue:abc", Decimal("10.015"), ()),
        (2000, "installs", Decimal(103), ()),
    ]
    assert history(store, "demo", "2026-03-02", "2026-03-09") == []


def test_last_activity_per_kind_and_event(store: KpiStore) -> None:
    records = [
        callback_record(1, T0 + 100),
        callback_record(2, T0 + 7200),
        callback_record(3, T0 + 3600, "event", event="abc123"),
        callback_record(4, T0 + 9000, "install", environment="sandbox"),
    ]
    store.write_batch("kpi", "cb", [Consumed(0, i, r) for i, r in enumerate(records)], 3600)
    found = {(a.activity_kind, a.event_token): a.bucket for a in last_activity(store, T0 - 86400)}
    assert found == {("install", ""): T0 + 7200, ("event", "abc123"): T0 + 3600}
    assert last_activity(store, T0 + 86400) == []
