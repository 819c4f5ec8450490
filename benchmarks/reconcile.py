"""Reconciliation's pure parts at a realistic size: parsing a Report Service answer and
comparing both sides, timed here and printed (no targets; figures for the README).

One app's lookback (3 days by default; ``--days 31`` for a month) x 40 networks x 60
countries, 5 activity KPIs and 20 events (events and revenue each), numbers as strings
as the Report Service sends them.

    python -m benchmarks.reconcile [--days N]
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import orjson

from postback_hub.adjust.pull_parse import EventSlug, Query, parse_report_json
from postback_hub.adjust.reconcile import Evidence, Tolerance, compare, table_counts

NETWORKS, COUNTRIES, EVENTS = 40, 60, 20
ACTIVITY_METRICS = [
    "installs",
    "reattributions",
    "reinstalls",
    "rejected_installs",
    "rejected_reattributions",
]


def answer(rng: random.Random, events: list[EventSlug], days: int) -> bytes:
    metrics = ACTIVITY_METRICS + [f"{e.slug}_{m}" for e in events for m in ("events", "revenue")]
    start = date(2026, 3, 1)
    rows = []
    for d in range(days):
        day = (start + timedelta(days=d)).isoformat()
        for n in range(NETWORKS):
            for c in range(COUNTRIES):
                row = {
                    "day": day,
                    "network": f"Network {n}",
                    "country_code": f"C{c:02d}"[:2] + chr(65 + c % 26),
                }
                for metric in metrics:
                    value = rng.randint(0, 50)
                    row[metric] = (
                        f"{value}.{rng.randint(0, 99):02d}"
                        if metric.endswith("revenue")
                        else str(value)
                    )
                rows.append(row)
    return orjson.dumps({"rows": rows, "totals": {}, "warnings": [], "pagination": None})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=3)
    days = parser.parse_args().days
    rng = random.Random(7)  # noqa: S311 - test data
    events = [EventSlug(f"event_{i}", (f"tok{i:03d}",)) for i in range(EVENTS)]
    body = answer(rng, events, days)
    query = Query(date(2026, 3, 1), date(2026, 3, 1) + timedelta(days=days - 1))
    started = time.perf_counter()
    table, _ = parse_report_json(body, query, events)
    parse_s = time.perf_counter() - started
    theirs = table_counts(table)
    ours = {
        key: value - (1 if rng.random() < 0.01 and value >= 1 else 0)
        for key, value in theirs.items()
    }
    evidence = Evidence(now=datetime(2026, 5, 1, tzinfo=UTC), utc_offset_s=0)
    started = time.perf_counter()
    lines = compare(ours, theirs, Tolerance(), evidence)
    compare_s = time.perf_counter() - started
    rows = days * NETWORKS * COUNTRIES
    print(
        f"Report Service answer: {rows:,} rows, {len(body) / 1e6:.1f} MB, "
        f"{len(table.values):,} values"
    )
    print(f"parse (exact decimals): {parse_s:.2f} s, {rows / parse_s:,.0f} rows/s")
    print(f"compare overall + per network + per country: {len(lines):,} lines in {compare_s:.2f} s")
    print(f"gaps beyond tolerance: {sum(1 for line in lines if line.gap):,}")
    assert sum((v for v in theirs.values()), Decimal(0)) > 0


if __name__ == "__main__":
    main()
