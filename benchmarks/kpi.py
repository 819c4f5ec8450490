"""KPI benchmark (printed figures, not pass/fail).

1. Store throughput: callbacks per second through ``KpiStore.write_batch`` (the
   sink's transaction: offsets, de-dup, rollup upserts) into SQLite and a
   throwaway PostgreSQL, in batches of 5000.
2. A 31-day overview grouped by trackers and countries over a store of at least
   one million rollup rows: p50 and p99 of ``run_query``.

Run: ``python -m benchmarks.kpi`` (``make bench``). The PostgreSQL server comes
from the test suite's helper (initdb + pg_ctl on a free port).
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from datetime import date
from decimal import Decimal
from pathlib import Path

from postback_hub.kpi.query import KpiQuery, run_query
from postback_hub.kpi.store import Consumed, KpiStore
from postback_hub.service.record import CallbackRecord, Revenue, iso_from_millis
from tests.postgres import LocalPostgres

D = 1_700_006_400  # 2023-11-15T00:00:00Z
_COUNTRIES = ["de", "us", "gb", "fr", "in", "br", "jp", "kr", "cn", "es"]
_KINDS = ["install", "session", "session", "session", "event", "reattribution"]


def _records(n: int, seed: int, networks: int, days: int) -> list[CallbackRecord]:
    rng = random.Random(seed)  # noqa: S311 - synthetic load, not secrets
    now = iso_from_millis(time.time_ns() // 1_000_000)
    out = []
    for i in range(n):
        kind = rng.choice(_KINDS)
        net = rng.randrange(networks)
        attributes: dict[str, str | int | bool] = {
            "tracker_name": f"Network {net}::Campaign {rng.randrange(20)}::Ad {rng.randrange(5)}",
            "country": rng.choice(_COUNTRIES),
            "os_name": rng.choice(["ios", "android"]),
            "device_type": "phone",
        }
        created = (D - rng.randrange(days * 86_400)) * 1000
        out.append(
            CallbackRecord(
                fingerprint=f"{seed:04x}{i:028x}",
                app="demo",
                activity_kind=kind,
                environment="production",
                created_at=iso_from_millis(created),
                received_at=now,
                device={"adid": f"{i:032x}"},
                event_token="tok1" if kind == "event" else None,
                revenue=Revenue(Decimal(rng.randint(1, 9999)) / 100, "USD")
                if kind == "event"
                else None,
                attributes=dict(attributes),
            )
        )
    return out


def _throughput(url: str, label: str) -> None:
    store = KpiStore.open(url)
    records = _records(100_000, 1, 20, 31)
    batch = 5000
    started = time.perf_counter()
    for first in range(0, len(records), batch):
        items = [Consumed(0, first + i, r) for i, r in enumerate(records[first : first + batch])]
        store.write_batch("bench", "callbacks", items, 172_800)
    elapsed = time.perf_counter() - started
    print(f"store throughput {label:10s}: {len(records) / elapsed:10.0f} callbacks/s")
    store.close()


def _fill(url: str, rows_wanted: int) -> int:
    """Writes spread over many trackers and 60 days until the store has rows_wanted rows."""
    store = KpiStore.open(url)
    seed, offset = 100, 0
    while True:
        records = _records(200_000, seed, 300, 60)
        for first in range(0, len(records), 20_000):
            chunk = records[first : first + 20_000]
            items = [Consumed(1, offset + i, r) for i, r in enumerate(chunk)]
            offset += len(chunk)
            store.write_batch("fill", "callbacks", items, 0)
        seed += 1
        rows = store._execute("SELECT count(*) FROM kpi_rollups").fetchone()[0]
        if rows >= rows_wanted:
            store.close()
            return int(rows)


def _overview(url: str, label: str, rows: int) -> None:
    store = KpiStore.open(url)
    query = KpiQuery(
        "demo", date(2023, 10, 15), date(2023, 11, 14), grouping=("trackers", "countries")
    )
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        run_query(store, query)
        timings.append(time.perf_counter() - started)
    timings.sort()
    p50 = statistics.median(timings)
    p99 = timings[min(len(timings) - 1, int(len(timings) * 0.99))]
    print(
        f"31-day overview by trackers,countries over {rows} rows, {label:10s}: "
        f"p50 {p50 * 1000:7.1f} ms  p99 {p99 * 1000:7.1f} ms"
    )
    store.close()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        postgres = LocalPostgres()
        postgres.start()
        try:
            sqlite_url = f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
            postgres_url = postgres.create_database()
            _throughput(sqlite_url, "SQLite")
            _throughput(postgres_url, "PostgreSQL")
            for url, label in ((sqlite_url, "SQLite"), (postgres_url, "PostgreSQL")):
                rows = _fill(url, 1_000_000)
                _overview(url, label, rows)
        finally:
            postgres.stop()


if __name__ == "__main__":
    main()
