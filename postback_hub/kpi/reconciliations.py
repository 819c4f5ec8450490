"""Reconciliation results with their history, and the last activity per kind and event.

Each check of a day against Adjust's numbers adds its lines to
``kpi_reconciliations`` under the check's time, so a day re-checked over the
lookback keeps every earlier verdict (and shows when Adjust revised it).
Amounts are stored as exact decimal text on every backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import orjson

from postback_hub.kpi.store import KpiStore
from postback_hub.service.record import decimal_text


@dataclass(frozen=True, slots=True)
class ResultRow:
    app: str
    day: str  # YYYY-MM-DD, local to the binding's UTC offset
    kpi: str
    scope: str  # all, network, country
    value: str  # the network or country; "" for all
    ours: Decimal
    theirs: Decimal
    verdict: str
    causes: tuple[str, ...]  # cause codes
    checked_ms: int = 0


def save(store: KpiStore, checked_ms: int, rows: Sequence[ResultRow]) -> None:
    """Add one check's lines (one transaction)."""
    with store.transaction() as tx:
        tx.executemany(
            "INSERT INTO kpi_reconciliations "
            "(app, day, kpi, scope, value, checked_ms, ours, theirs, verdict, causes) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [
                (
                    r.app,
                    r.day,
                    r.kpi,
                    r.scope,
                    r.value,
                    checked_ms,
                    decimal_text(r.ours),
                    decimal_text(r.theirs),
                    r.verdict,
                    orjson.dumps(list(r.causes)).decode(),
                )
                for r in rows
            ],
        )


def history(store: KpiStore, app: str, first_day: str, last_day: str) -> list[ResultRow]:
    """Every stored line of ``app`` for the days given, oldest check first."""
    rows = store.read(
        "SELECT app, day, kpi, scope, value, ours, theirs, verdict, causes, checked_ms "
        "FROM kpi_reconciliations WHERE app = ? AND day >= ? AND day <= ? "
        "ORDER BY checked_ms, day, kpi, scope, value",
        (app, first_day, last_day),
    )
    return [
        ResultRow(
            str(a),
            str(d),
            str(k),
            str(s),
            str(v),
            Decimal(o),
            Decimal(t),
            str(verdict),
            tuple(orjson.loads(causes)),
            int(checked),
        )
        for a, d, k, s, v, o, t, verdict, causes, checked in rows
    ]


@dataclass(frozen=True, slots=True)
class LastActivity:
    app: str
    activity_kind: str
    event_token: str
    bucket: int  # start (Unix seconds) of the newest 15-minute bucket with an activity


def last_activity(store: KpiStore, since_bucket: int, app: str | None = None) -> list[LastActivity]:
    """The newest production activity per app, kind and event token since ``since_bucket``.

    It is the activity's own time (what the rollups keep), to the quarter hour;
    for a callback Adjust delivers at once that is when it was received.
    """
    sql = (
        "SELECT app, activity_kind, event_token, max(bucket) FROM kpi_rollups "
        "WHERE environment = 'production' AND bucket >= ?"
    )
    params: list[object] = [since_bucket]
    if app is not None:
        sql += " AND app = ?"
        params.append(app)
    sql += " GROUP BY app, activity_kind, event_token ORDER BY app, activity_kind, event_token"
    return [LastActivity(str(a), str(k), str(e), int(b)) for a, k, e, b in store.read(sql, params)]
