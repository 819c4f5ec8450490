"""KPI benchmark (printed figures, not pass/fail).

1. Sink throughput against the receiver: the receiver's maximum rate (``wrk`` against
   ``postback-hub serve``, one process per core, as ``benchmarks.ingest`` measures it)
   with varied callbacks (kinds, countries, trackers, revenue, 31 days of activity
   times); then the rollup sink (``postback-hub consume kpi``, a process of its own)
   reads those same callbacks from Kafka into SQLite, and again into PostgreSQL:
   callbacks/s of each and the ratio to the receiver's rate.
2. Freshness: ``postback-hub run`` (receiver, sink on SQLite, KPI API) at 200
   callbacks/s; for each callback, from the receiver's 200 to the first KPI API answer
   that counts it: p50 and p99.
3. The 31-day overview grouped by trackers and countries (``run_query``, p50 and p99)
   over stores of at least one million 15-minute rollup rows, bulk-loaded (one
   transaction of sorted inserts into SQLite, COPY into PostgreSQL; the store's own
   backfill then builds its pre-aggregates). Two stores: *skewed* (networks,
   campaigns, countries and kinds Zipf-distributed, as traffic is) and *sparse* (the
   worst case: every rollup row one callback, uniform over 300 networks x 100 ads).

Run: ``python -m benchmarks.kpi [--seconds S] [--samples N]`` (``make bench``). The
PostgreSQL server comes from the test suite's helper (initdb + pg_ctl on a free port).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.common import broker, quiet_kafka_logs
from benchmarks.ingest import SECRET, wait_ready, wrk
from postback_hub.kpi.exact import split
from postback_hub.kpi.grains import GRAINS
from postback_hub.kpi.query import KpiQuery, run_query
from postback_hub.kpi.store import KEY_COLUMNS, KpiStore, node_token
from postback_hub.service.localkafka import free_port
from postback_hub.service.topics import ensure_topic
from tests.postgres import LocalPostgres
from tests.support import topic_size

TOKEN = "bench-kpi-token"  # noqa: S105 - a throwaway value for a local benchmark
D = 1_700_006_400  # 2023-11-15T00:00:00Z: the stores hold the 60 days before it
DAY = 86_400

# Varied callbacks for wrk: the n-th request's kind, country, tracker and activity time
# follow from n, so the sink does the work real traffic makes it do.
LUA = r"""
counter = 0
kinds = {"install", "session", "session", "session", "event", "reattribution"}
countries = {"de", "us", "gb", "fr", "in", "br", "jp", "kr"}
request = function()
  counter = counter + 1
  local kind = kinds[counter % #kinds + 1]
  local path = string.format("/v1/adjust/demo?secret=%s&activity_kind=%s&adid=%032x"
    .. "&created_at_milli=%d&country=%s&os_name=%s&device_type=phone"
    .. "&tracker_name=Network%%20%d%%3A%%3ACampaign%%20%d%%3A%%3AAd%%20%d",
    "SECRET", kind, counter, 1697328000000 + (counter * 7919) % 2678400000,
    countries[counter % #countries + 1], (counter % 2 == 0) and "ios" or "android",
    counter % 20, counter % 7, counter % 3)
  if kind == "event" then
    path = path .. string.format("&event=tok1&revenue=%d&currency=USD", counter % 9999 + 1)
  end
  return wrk.format("GET", path)
end
""".replace("SECRET", SECRET)


def _config(
    path: Path, bootstrap: str, topic: str, database_url: str, port: int, workers: int
) -> None:
    kpi_port = free_port()
    path.write_text(
        f'kafka = {{bootstrap_servers = "{bootstrap}", topic = "{topic}", create_topic = false}}\n'
        f'receiver = {{host = "127.0.0.1", port = {port}, workers = {workers},'
        " max_connections = 20000}\n"
        'logging = {level = "WARNING"}\n'
        'apps = {demo = {secret = {env = "BENCH_SECRET"}}}\n'
        "[kpi]\n"
        f'database_url = "{database_url}"\n'
        f"port = {kpi_port}\n"
        'tokens = {bench = {secret = {env = "BENCH_KPI_TOKEN"}, apps = ["demo"]}}\n'
        "[destinations.kpi]\n"
        'type = "kpi"\n'
    )


def _kpi_port(config: Path) -> int:
    for line in config.read_text().splitlines():
        if line.startswith("port = "):
            return int(line.split("=")[1])
    raise ValueError("no [kpi] port")


def _env() -> dict[str, str]:
    return {**os.environ, "BENCH_SECRET": SECRET, "BENCH_KPI_TOKEN": TOKEN}


def _spawn(log: Path, *args: str, session: bool = False) -> subprocess.Popen[bytes]:
    """``postback-hub ARGS`` with its output in ``log`` (shown when a figure fails)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "postback_hub", *args],
            env=_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=session,
        )


def _tail(log: Path) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-15:])


# ---------------------------------------------------------------------- 1. throughput


async def _sink_rate(config: Path, database_url: str, topic: str, total: int) -> float:
    """Callbacks/s of a ``consume kpi`` process from its first stored batch to the last."""
    log = config.with_suffix(".log")
    process = _spawn(log, "consume", "kpi", "--config", str(config))
    store = KpiStore.open(database_url)
    try:
        first: tuple[float, int] | None = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            done = sum(store.stored_offsets("kpi", topic).values())
            now = time.perf_counter()
            if first is None and done > 0:
                first = (now, done)
            if done >= total and first is not None:
                return (total - first[1]) / max(now - first[0], 1e-9)
            await asyncio.sleep(0.1)
        raise TimeoutError(f"the sink stored {done} of {total} offsets in 600 s\n{_tail(log)}")
    finally:
        store.close()
        process.terminate()
        process.wait(timeout=60)


async def throughput(bootstrap: str, tmp: Path, postgres_url: str, seconds: int) -> None:
    topic = f"bench-kpi-{time.time_ns()}"
    await ensure_topic({"bootstrap_servers": bootstrap}, topic, 6)
    workers = os.cpu_count() or 2
    port = free_port()
    sqlite_url = f"sqlite:///{tmp / 'sink.sqlite3'}"
    receiver_config = tmp / "receiver.toml"
    _config(receiver_config, bootstrap, topic, sqlite_url, port, workers)
    script = tmp / "kpi.lua"
    script.write_text(LUA)
    log = tmp / "receiver.log"
    server = _spawn(log, "serve", "--config", str(receiver_config))
    try:
        try:
            await wait_ready(f"http://127.0.0.1:{port}/readyz")
        except TimeoutError:
            raise TimeoutError(f"the receiver never got ready:\n{_tail(log)}") from None
        await asyncio.sleep(1.0)  # every worker connected
        wrk(f"http://127.0.0.1:{port}", 2, 64, script)  # warm-up
        rate, p50, p99 = wrk(f"http://127.0.0.1:{port}", seconds, 64, script)
    finally:
        server.terminate()
        server.wait(timeout=60)
    total = await topic_size(bootstrap, topic)
    print(
        f"receiver max rate ({workers} processes, varied callbacks, wrk -c64 {seconds} s):"
        f" {rate:.0f} callbacks/s (p50 {p50:.1f} ms, p99 {p99:.1f} ms); {total} on the topic"
    )
    for label, url in (("SQLite", sqlite_url), ("PostgreSQL", postgres_url)):
        config = tmp / f"sink-{label}.toml"
        _config(config, bootstrap, topic, url, free_port(), 1)
        sink = await _sink_rate(config, url, topic, total)
        verdict = "keeps up" if sink >= rate else "FALLS BEHIND"
        print(
            f"kpi sink into {label:10s}: {sink:8.0f} callbacks/s = {sink / rate:.2f} x the"
            f" receiver's max rate ({verdict})"
        )


# ---------------------------------------------------------------------- 2. freshness


async def freshness(bootstrap: str, tmp: Path, rate: float, seconds: int) -> None:
    topic = f"bench-kpi-fresh-{time.time_ns()}"
    # One partition: offsets follow the order of the receiver's acknowledgements, so the
    # k-th acknowledged callback is counted exactly when the API's count reaches k.
    await ensure_topic({"bootstrap_servers": bootstrap}, topic, 1)
    port = free_port()
    config = tmp / "fresh.toml"
    _config(config, bootstrap, topic, f"sqlite:///{tmp / 'fresh.sqlite3'}", port, 1)
    api = f"http://127.0.0.1:{_kpi_port(config)}/kpis/v1/demo"
    log = tmp / "fresh.log"
    process = _spawn(log, "run", "--config", str(config), session=True)
    receiver = f"http://127.0.0.1:{port}/v1/adjust/demo"
    today = datetime.now(UTC).date().isoformat()
    query = f"?start_date={today}&end_date={today}&kpis=installs&grouping="
    headers = {"Authorization": f"Token token={TOKEN}"}
    acked: list[float] = []
    seen: list[tuple[float, int]] = []
    try:
        try:
            await wait_ready(f"http://127.0.0.1:{port}/readyz")
        except TimeoutError:
            raise TimeoutError(f"run never got ready:\n{_tail(log)}") from None
        async with aiohttp.ClientSession() as session:

            async def count() -> int:
                async with session.get(api + query, headers=headers) as response:
                    if response.status != 200:
                        return -1
                    body = await response.json()
                    return int(body["result_set"]["kpi_values"][0])

            async def send(n: int, record: bool) -> None:
                millis = time.time_ns() // 1_000_000
                params = f"secret={SECRET}&activity_kind=install&adid={n:032x}"
                async with session.get(f"{receiver}?{params}&created_at_milli={millis}") as r:
                    await r.read()
                    if r.status == 200 and record:
                        acked.append(time.perf_counter())

            # Warm-up: the sink has joined its group and the API answers.
            base = 0
            for attempt in range(600):
                await send(10**9 + attempt, record=False)
                await asyncio.sleep(0.1)
                base = await count()
                if base > 0:
                    break
            await asyncio.sleep(1.0)
            base = await count()

            async def poll(until: float) -> None:
                while time.perf_counter() < until:
                    n = await count()
                    seen.append((time.perf_counter(), n - base))
                    await asyncio.sleep(0.01)

            begin = time.perf_counter()
            poller = asyncio.create_task(poll(begin + seconds + 15))
            tasks = []
            n = 0
            while (elapsed := time.perf_counter() - begin) < seconds:
                while n < int(elapsed * rate):
                    tasks.append(asyncio.create_task(send(n, record=True)))
                    n += 1
                await asyncio.sleep(0.002)
            await asyncio.gather(*tasks)
            await poller
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=60)
    acked.sort()
    delays: list[float] = []
    for k, at in enumerate(acked, start=1):
        visible = next((t for t, n in seen if n >= k), None)
        if visible is not None:
            delays.append(max(0.0, visible - at) * 1000)
    quantiles = statistics.quantiles(delays, n=100)
    print(
        f"freshness at {rate:.0f} callbacks/s for {seconds} s (receiver's 200 -> counted by"
        f" the KPI API, SQLite): {len(delays)} of {len(acked)} seen; p50 {quantiles[49]:.0f} ms,"
        f" p99 {quantiles[98]:.0f} ms"
    )


# ---------------------------------------------------------------------- 3. the overview

_KINDS = [  # (kind, event token, attribution, weight)
    ("session", "", "", 70),
    ("event", "tok1", "", 8),
    ("event", "tok2", "", 4),
    ("event", "tok3", "", 3),
    ("install", "", "installed", 6),
    ("click", "", "", 6),
    ("reattribution", "", "reattributed", 2),
]
_PRICES = {"tok1": 199, "tok2": 499, "tok3": 999}  # cents
Rows = dict[tuple[Any, ...], list[int]]  # 15-minute key -> [count, cents, revenue events]


def _zipf(n: int, s: float) -> list[float]:
    return list(itertools.accumulate(1 / (i + 1) ** s for i in range(n)))


def _key(
    bucket: int, kind: int, net: int, camp: int, ad: int, country: str, os_name: str
) -> tuple[Any, ...]:
    name, token, attribution, _ = _KINDS[kind]
    network = "Organic" if net == 0 else f"Network {net}"
    return (
        "demo",
        "production",
        bucket,
        name,
        token,
        "",
        network,
        "" if net == 0 else f"Campaign {camp}",
        "" if net == 0 else f"Ad {ad}",
        "",
        country,
        os_name,
        "phone",
        attribution,
        "",
        "USD" if token else "",
    )


def skewed_rows(wanted: int) -> Rows:
    """Callbacks drawn per 15-minute bucket over 60 days, every dimension Zipf-distributed."""
    rng = random.Random(5)  # noqa: S311 - synthetic load
    networks, countries = _zipf(15, 1.4), _zipf(25, 1.4)
    campaigns, ads, kinds = (
        _zipf(5, 1.4),
        _zipf(3, 1.4),
        list(itertools.accumulate(k[3] for k in _KINDS)),
    )
    names = [f"c{i:02d}" for i in range(25)]
    rows: Rows = {}
    per_bucket = 220
    while len(rows) < wanted:
        for bucket in range(D - 60 * DAY, D, 900):
            n = per_bucket
            drawn = zip(
                rng.choices(range(len(_KINDS)), cum_weights=kinds, k=n),
                rng.choices(range(15), cum_weights=networks, k=n),
                rng.choices(range(5), cum_weights=campaigns, k=n),
                rng.choices(range(3), cum_weights=ads, k=n),
                rng.choices(names, cum_weights=countries, k=n),
                rng.choices(("ios", "android"), weights=(45, 55), k=n),
                strict=True,
            )
            for combo, count in Counter(drawn).items():
                _add(rows, _key(bucket, *combo), count)
        per_bucket = per_bucket // 2 + 1  # a second pass only tops up
    return rows


def sparse_rows(wanted: int) -> Rows:
    """Uniform callbacks over 300 networks x 20 campaigns x 5 ads, 10 countries, 60 days:
    nearly every callback a rollup row of its own (the worst case for pre-aggregates)."""
    rng = random.Random(6)  # noqa: S311 - synthetic load
    countries = ["de", "us", "gb", "fr", "in", "br", "jp", "kr", "cn", "es"]
    rows: Rows = {}
    while len(rows) < wanted:
        for _ in range(100_000):
            bucket = D - 60 * DAY + rng.randrange(60 * 96) * 900
            kind = rng.choice((0, 0, 0, 1, 4, 6))
            key = _key(
                bucket,
                kind,
                rng.randrange(1, 301),
                rng.randrange(20),
                rng.randrange(5),
                rng.choice(countries),
                rng.choice(("ios", "android")),
            )
            _add(rows, key, 1)
    return rows


def _add(rows: Rows, key: tuple[Any, ...], count: int) -> None:
    token = key[4]
    cents = _PRICES[token] * count if token else 0
    measures = rows.get(key)
    if measures is None:
        rows[key] = [count, cents, count if token else 0]
    else:
        measures[0] += count
        measures[1] += cents
        measures[2] += count if token else 0


def _nodes(rows: Rows) -> Iterator[tuple[str, str, int, str, str, str, str]]:
    paths = {(k[6], k[7], k[8]) for k in rows}
    seen: set[tuple[str, ...]] = set()
    for path in paths:
        for level in (1, 2, 3):
            names = path[:level]
            if names not in seen:
                seen.add(names)
                padded = (*names, *[""] * (4 - level))
                yield ("demo", node_token(names), level, *padded)


_NODE_SQL = (
    "INSERT INTO kpi_tracker_nodes (app, token, level, network, campaign, adgroup, "
    "creative) VALUES (%s) ON CONFLICT DO NOTHING"
)


def _load_sqlite(path: str, rows: Rows) -> None:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("BEGIN")
    marks = ", ".join("?" * (len(KEY_COLUMNS) + 5))
    connection.executemany(
        f"INSERT INTO kpi_rollups ({', '.join(KEY_COLUMNS)}, count, revenue_units, "  # noqa: S608
        f"revenue_nanos, revenue_rest, revenue_events) VALUES ({marks})",
        (
            (*key, count, *split(Decimal(cents) / 100), events)
            for key, (count, cents, events) in sorted(rows.items())  # appends, in key order
        ),
    )
    connection.executemany(_NODE_SQL % ", ".join("?" * 7), _nodes(rows))
    connection.execute("COMMIT")
    connection.close()


def _load_postgres(url: str, rows: Rows) -> None:
    import psycopg

    columns = ", ".join(KEY_COLUMNS)
    copy_sql = f"COPY kpi_rollups ({columns}, count, revenue, revenue_events) FROM STDIN"
    with psycopg.connect(url) as connection:
        with connection.cursor() as cursor:
            with cursor.copy(copy_sql) as copy:
                for key, (count, cents, events) in rows.items():
                    copy.write_row((*key, count, Decimal(cents) / 100, events))
            cursor.executemany(_NODE_SQL % ", ".join(["%s"] * 7), list(_nodes(rows)))
        connection.commit()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE kpi_rollups")


def load(url: str, rows: Rows) -> None:
    """Bulk-load the 15-minute table; reopening the store backfills the pre-aggregates."""
    KpiStore.open(url).close()
    if url.startswith("sqlite:///"):
        _load_sqlite(url.removeprefix("sqlite:///"), rows)
    else:
        _load_postgres(url, rows)
    started = time.perf_counter()
    KpiStore.open(url).close()  # the backfill of the hourly, daily and weekly tables
    print(f"  backfill of the pre-aggregates: {time.perf_counter() - started:.1f} s")


def overview(url: str, label: str, samples: int) -> None:
    store = KpiStore.open(url)
    try:
        counts = ", ".join(
            f"{grain.table} {store.read(f'SELECT count(*) FROM {grain.table}')[0][0]}"  # noqa: S608
            for grain in reversed(GRAINS)
        )
        print(f"  {label} rows: {counts}")
        for offset_s, text in ((0, "00:00"), (19_800, "+05:30")):
            query = KpiQuery(
                "demo",
                date(2023, 10, 15),
                date(2023, 11, 14),
                utc_offset_s=offset_s,
                grouping=("trackers", "countries"),
            )
            run_query(store, query)  # warm the caches, as a dashboard in use has them
            timings = []
            for _ in range(samples):
                started = time.perf_counter()
                result = run_query(store, query)
                timings.append(time.perf_counter() - started)
            timings.sort()
            p50 = statistics.median(timings)
            p99 = timings[min(len(timings) - 1, int(len(timings) * 0.99))]
            print(
                f"  31-day overview by trackers,countries at {text}, {label:10s}:"
                f" p50 {p50 * 1000:7.1f} ms  p99 {p99 * 1000:7.1f} ms"
                f" ({samples} samples, {len(result.groups)} groups)"
            )
    finally:
        store.close()


def overviews(tmp: Path, postgres: LocalPostgres, samples: int, wanted: int) -> None:
    for name, make in (("skewed", skewed_rows), ("sparse", sparse_rows)):
        started = time.perf_counter()
        rows = make(wanted)
        print(
            f"{name} store: {len(rows)} 15-minute rows of {sum(m[0] for m in rows.values())}"
            f" callbacks, generated in {time.perf_counter() - started:.0f} s"
        )
        for label, url in (
            ("SQLite", f"sqlite:///{tmp / f'{name}.sqlite3'}"),
            ("PostgreSQL", postgres.create_database()),
        ):
            started = time.perf_counter()
            load(url, rows)
            print(f"  {label} loaded in {time.perf_counter() - started:.0f} s")
            overview(url, label, samples)
        del rows


async def main(args: argparse.Namespace) -> int:
    postgres = LocalPostgres()
    postgres.start()
    try:
        with tempfile.TemporaryDirectory(prefix="postback-hub-kpi-bench-") as name:
            tmp = Path(name)
            if not args.skip_stream:
                if shutil.which("wrk") is None:
                    print("wrk is missing (make bench installs it)", file=sys.stderr)
                    return 2
                with broker(args.bootstrap) as bootstrap:
                    await throughput(bootstrap, tmp, postgres.create_database(), args.seconds)
                    await freshness(bootstrap, tmp, 200.0, args.seconds)
            overviews(tmp, postgres, args.samples, args.rows)
    finally:
        postgres.stop()
    return 0


def cli() -> None:
    quiet_kafka_logs()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="load per measurement")
    parser.add_argument("--samples", type=int, default=7, help="timed queries per figure")
    parser.add_argument("--rows", type=int, default=1_000_000, help="15-minute rows per store")
    parser.add_argument("--skip-stream", action="store_true", help="only the overview")
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    raise SystemExit(asyncio.run(main(parser.parse_args())))


if __name__ == "__main__":
    cli()
