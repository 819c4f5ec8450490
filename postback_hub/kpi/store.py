"""The KPI store: rollups, consumed offsets and seen fingerprints in one database.

SQLite (stdlib ``sqlite3``, WAL, so the API reads while the sink writes) or
PostgreSQL (psycopg 3), chosen by URL; one schema and one set of statements,
written with ``?`` placeholders, differing only in how revenue is stored
(PostgreSQL: NUMERIC; SQLite, which has no exact decimal: whole units and nanos
as integers, see :mod:`postback_hub.kpi.exact`).

The rollups are kept at three grains (15 minutes, hours, UTC days; see
:mod:`postback_hub.kpi.grains`), all upserted from the same deltas in the
batch's transaction, so every grain always holds the same totals; a read takes
each part of its range from the coarsest table that tiles it.

Exactly once: :meth:`KpiStore.write_batch` applies a batch's rollup deltas, the
fingerprints it saw and the partitions' next offsets in ONE transaction. Within
it the stored offsets are read first (locked), and a message below its
partition's stored offset is skipped: so a batch written twice (a crash after
the commit, a rebalance that hands a partition over mid-batch, a replay from
the earliest offset) changes nothing. An activity whose fingerprint is already
stored within the de-dup window (Adjust's own duplicates) is not counted again.

Every method is blocking; callers on an event loop run them in a thread. One
store object holds one connection behind a lock.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from postback_hub.kpi.exact import join, split, tidy
from postback_hub.kpi.grains import DETAIL, FINEST, GRAINS, Grain, pieces, usable
from postback_hub.kpi.rollup import TRACKER_LEVELS, Measures, RollupKey, aggregate
from postback_hub.service.record import CallbackRecord, decimal_text, millis_from_iso

# The rollup key's columns, in primary-key order (RollupKey's field order).
KEY_COLUMNS: tuple[str, ...] = tuple(RollupKey.__dataclass_fields__)
# Columns a query may filter or group by.
DIMENSIONS = frozenset(KEY_COLUMNS) - {"app", "environment", "bucket"}
_CHUNK = 500  # parameters per IN (...) list, under every backend's limit


def node_token(names: Sequence[str]) -> str:
    """A stable token for a node of the tracker tree (network, campaign, adgroup, creative
    names down to its level); callbacks carry only the leaf's real token."""
    text = "\x1f".join(names)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class Consumed:
    """One message taken from the callbacks topic; ``record`` is None when unreadable."""

    partition: int
    offset: int
    record: CallbackRecord | None


@dataclass(frozen=True, slots=True)
class BatchResult:
    counted: int  # activities added to the rollups
    duplicates: int  # fingerprints already counted (Adjust's retries, replays)
    already_applied: int  # messages below the stored offset (written by an earlier batch)
    unreadable: int
    rows: int  # rollup rows inserted or updated
    offsets: dict[int, int]  # partition -> next offset stored by this batch


@dataclass(frozen=True, slots=True)
class TrackerNode:
    app: str
    token: str
    level: int  # 1 network .. 4 creative
    names: tuple[str, ...]  # down to `level`


@dataclass(frozen=True, slots=True)
class Bucketed:
    """A group expression: local periods of ``seconds`` at a UTC offset (days, hours)."""

    seconds: int
    offset_s: int


GroupExpr = str | Bucketed


@dataclass(frozen=True, slots=True)
class AggregateRow:
    group: tuple[str | int, ...]
    activity_kind: str
    event_token: str
    rejection_reason: str
    currency: str
    count: int
    revenue: Decimal
    revenue_events: int


class _Connection(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Dialect:
    """What differs between the backends: how revenue is stored, added and summed."""

    name: str
    revenue_ddl: str  # the revenue columns' definitions
    revenue_columns: tuple[str, ...]
    add_revenue: str  # the upsert's SET clauses for stored + delta; {t} is the table
    sum_revenue: str  # the aggregates over stored revenue, one per revenue column
    table_options: str
    for_update: str
    begin: str | None  # an explicit BEGIN (sqlite3 in autocommit mode) or None

    def sql(self, text: str) -> str:
        return text if self.name == "sqlite" else text.replace("?", "%s")

    def revenue_params(self, value: Decimal) -> tuple[Any, ...]:
        return split(value) if self.name == "sqlite" else (value,)

    def revenue_of(self, sums: Sequence[Any]) -> Decimal:
        """The exact total of one result row's ``sum_revenue`` columns."""
        if self.name == "sqlite":
            units, nanos, rest = sums
            if not units and not nanos and rest is None:
                return _ZERO  # most rows: counts without revenue
            return join(int(units or 0), int(nanos or 0), rest)
        return Decimal(0) if sums[0] is None else tidy(Decimal(sums[0]))


# SQLite: revenue as exact integers (postback_hub.kpi.exact), so sum() runs in C;
# WITHOUT ROWID clusters the rows by their key, so a range of (app, environment,
# bucket) is one contiguous read that covers every column.
_SQLITE = _Dialect(
    name="sqlite",
    revenue_ddl=(
        "revenue_units BIGINT NOT NULL,\n  revenue_nanos BIGINT NOT NULL,\n  revenue_rest TEXT"
    ),
    revenue_columns=("revenue_units", "revenue_nanos", "revenue_rest"),
    add_revenue=(
        "revenue_units = {t}.revenue_units + excluded.revenue_units, "
        "revenue_nanos = {t}.revenue_nanos + excluded.revenue_nanos, "
        "revenue_rest = CASE WHEN excluded.revenue_rest IS NULL THEN {t}.revenue_rest "
        "WHEN {t}.revenue_rest IS NULL THEN excluded.revenue_rest "
        "ELSE dec_add({t}.revenue_rest, excluded.revenue_rest) END"
    ),
    sum_revenue=(
        "sum(revenue_units), sum(revenue_nanos), "
        "dec_sum(revenue_rest) FILTER (WHERE revenue_rest IS NOT NULL)"
    ),
    table_options=" WITHOUT ROWID",
    for_update="",
    begin="BEGIN IMMEDIATE",
)
# PostgreSQL: NUMERIC is exact and its sum() native.
_POSTGRES = _Dialect(
    name="postgresql",
    revenue_ddl="revenue NUMERIC NOT NULL",
    revenue_columns=("revenue",),
    add_revenue="revenue = {t}.revenue + excluded.revenue",
    sum_revenue="sum(revenue)",
    table_options="",
    for_update=" FOR UPDATE",
    begin=None,
)
_ZERO = Decimal(0)
# Serialises the schema's set-up (and the pre-aggregates' backfill) across openers.
_SCHEMA_LOCK = 0x6B7069  # "kpi"


def _key_columns(grain: Grain) -> tuple[str, ...]:
    """A grain's key columns, in primary-key order."""
    return KEY_COLUMNS if grain.detailed else tuple(c for c in KEY_COLUMNS if c not in DETAIL)


def _rollup_table(grain: Grain, dialect: _Dialect) -> str:
    columns = _key_columns(grain)
    key_columns = ",\n  ".join(
        f"{column} BIGINT NOT NULL" if column == "bucket" else f"{column} TEXT NOT NULL"
        for column in columns
    )
    return f"""CREATE TABLE IF NOT EXISTS {grain.table} (
  {key_columns},
  count BIGINT NOT NULL,
  {dialect.revenue_ddl},
  revenue_events BIGINT NOT NULL,
  PRIMARY KEY ({", ".join(columns)})
){dialect.table_options}"""


def _schema(dialect: _Dialect) -> list[str]:
    return [
        *(_rollup_table(grain, dialect) for grain in GRAINS),
        """CREATE TABLE IF NOT EXISTS kpi_offsets (
  consumer TEXT NOT NULL,
  topic TEXT NOT NULL,
  partition INTEGER NOT NULL,
  next_offset BIGINT NOT NULL,
  PRIMARY KEY (consumer, topic, partition)
)""",
        """CREATE TABLE IF NOT EXISTS kpi_fingerprints (
  fingerprint TEXT NOT NULL PRIMARY KEY,
  seen_ms BIGINT NOT NULL
)""",
        "CREATE INDEX IF NOT EXISTS kpi_fingerprints_seen ON kpi_fingerprints (seen_ms)",
        """CREATE TABLE IF NOT EXISTS kpi_tracker_nodes (
  app TEXT NOT NULL,
  token TEXT NOT NULL,
  level INTEGER NOT NULL,
  network TEXT NOT NULL,
  campaign TEXT NOT NULL,
  adgroup TEXT NOT NULL,
  creative TEXT NOT NULL,
  PRIMARY KEY (app, token)
)""",
        # Callbacks we answered 4xx, from the receiver's rejection notes
        # (postback_hub.kpi.rejections): reconciliation names them as a cause.
        """CREATE TABLE IF NOT EXISTS kpi_rejections (
  app TEXT NOT NULL,
  bucket BIGINT NOT NULL,
  activity_kind TEXT NOT NULL,
  reason TEXT NOT NULL,
  count BIGINT NOT NULL,
  PRIMARY KEY (app, bucket, activity_kind, reason)
)""",
        # Every reconciliation line ever computed, one row per check (the history).
        """CREATE TABLE IF NOT EXISTS kpi_reconciliations (
  app TEXT NOT NULL,
  day TEXT NOT NULL,
  kpi TEXT NOT NULL,
  scope TEXT NOT NULL,
  value TEXT NOT NULL,
  checked_ms BIGINT NOT NULL,
  ours TEXT NOT NULL,
  theirs TEXT NOT NULL,
  verdict TEXT NOT NULL,
  causes TEXT NOT NULL,
  PRIMARY KEY (app, day, kpi, scope, value, checked_ms)
)""",
    ]


def _sqlite_path(url: str) -> Path:
    # SQLAlchemy's convention: sqlite:///relative and sqlite:////absolute.
    return Path(url.removeprefix("sqlite:///"))


def _dec_add(stored: str, delta: str) -> str:
    return decimal_text(Decimal(stored) + Decimal(delta))


class _DecSum:
    def __init__(self) -> None:
        self.total = Decimal(0)

    def step(self, value: str | None) -> None:
        if value is not None:
            self.total += Decimal(value)

    def finalize(self) -> str:
        return decimal_text(self.total)


def _open_sqlite(url: str) -> sqlite3.Connection:
    path = _sqlite_path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Autocommit mode: transactions are the explicit BEGIN IMMEDIATE ... COMMIT below.
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA busy_timeout = 30000")
    connection.execute("PRAGMA journal_mode = WAL")
    # In WAL mode NORMAL loses no committed transaction on a process crash; a power
    # loss may drop the last ones, rollups and offsets together, so Kafka redelivers.
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.create_function("dec_add", 2, _dec_add, deterministic=True)
    # typeshed types an aggregate as int -> int; sqlite3 accepts any SQLite value.
    connection.create_aggregate("dec_sum", 1, _DecSum)  # type: ignore[arg-type]
    return connection


class KpiStore:
    """Schema, writes and reads of the KPI store. Open with :meth:`open`.

    Statements are assembled only from this module's own column names and ``?``
    marks (hence the S608 waivers); every value is a bound parameter.
    """

    def __init__(self, connection: _Connection, dialect: _Dialect) -> None:
        self._connection = connection
        self._dialect = dialect
        self._lock = threading.Lock()
        self.backend = dialect.name

    @classmethod
    def open(cls, url: str) -> KpiStore:
        """Connect to ``sqlite:///path`` or ``postgresql://...`` and create the schema."""
        if url.startswith("sqlite:///"):
            store = cls(_open_sqlite(url), _SQLITE)
        elif url.startswith(("postgresql://", "postgres://")):
            import psycopg

            store = cls(psycopg.connect(url, autocommit=True), _POSTGRES)
        else:
            raise ValueError("a KPI database URL is sqlite:///path or postgresql://...")
        store.ensure_schema()
        return store

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    # ------------------------------------------------------------------ plumbing

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._connection.execute(self._dialect.sql(sql), params)

    def _executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if not rows:
            return
        if isinstance(self._connection, sqlite3.Connection):
            self._connection.executemany(sql, rows)
        else:
            # psycopg pipelines executemany: one round trip for the whole batch.
            with self._connection.cursor() as cursor:  # type: ignore[attr-defined]
                cursor.executemany(self._dialect.sql(sql), rows)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._lock:
            if self._dialect.begin is not None:
                self._execute(self._dialect.begin)
            else:
                self._execute("BEGIN")
            try:
                yield
            except BaseException:
                self._execute("ROLLBACK")
                raise
            self._execute("COMMIT")

    @contextmanager
    def transaction(self) -> Iterator[Statements]:
        """One transaction for modules that keep their own tables here (rejections,
        reconciliation results): statements use ``?`` marks on every backend."""
        with self._transaction():
            yield Statements(self)

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of one read-only statement (``?`` marks)."""
        with self._lock:
            return [tuple(row) for row in self._execute(sql, params).fetchall()]

    @property
    def for_update(self) -> str:
        """The row-lock clause of a SELECT in a transaction ("" on SQLite, which locks all)."""
        return self._dialect.for_update

    def ensure_schema(self) -> None:
        """Create what is missing; bring a store of an earlier layout up to date."""
        with self._transaction():
            if self._dialect.name == "postgresql":
                self._execute("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
            elif self._has_column("kpi_rollups", "revenue"):
                self._migrate_decimal_text()
            for statement in _schema(self._dialect):
                self._execute(statement)
            self._backfill_grains()

    def _has_column(self, table: str, column: str) -> bool:
        rows = self._execute(f"PRAGMA table_info({table})").fetchall()
        return any(row[1] == column for row in rows)

    def _migrate_decimal_text(self) -> None:
        """SQLite stores from before the integer revenue columns: the old table's rows
        move over exactly (a non-zero amount as the rest column's decimal text)."""
        self._execute("ALTER TABLE kpi_rollups RENAME TO kpi_rollups_text")
        self._execute(_rollup_table(FINEST, self._dialect))
        columns = ", ".join(KEY_COLUMNS)
        self._execute(
            f"INSERT INTO kpi_rollups ({columns}, count, revenue_units, revenue_nanos, "  # noqa: S608
            f"revenue_rest, revenue_events) SELECT {columns}, count, 0, 0, "
            "CASE WHEN revenue = '0' THEN NULL ELSE revenue END, revenue_events "
            "FROM kpi_rollups_text"
        )
        self._execute("DROP TABLE kpi_rollups_text")

    def _backfill_grains(self) -> None:
        """A coarser table created after rollups were written is filled from them once."""
        finest = FINEST.table
        if self._execute(f"SELECT 1 FROM {finest} LIMIT 1").fetchone() is None:  # noqa: S608
            return
        revenue = ", ".join(self._dialect.revenue_columns)
        for grain in GRAINS[:-1]:
            if self._execute(f"SELECT 1 FROM {grain.table} LIMIT 1").fetchone() is not None:  # noqa: S608
                continue
            columns = _key_columns(grain)
            selects = ", ".join(
                f"bucket / {int(grain.seconds)} * {int(grain.seconds)}" if c == "bucket" else c
                for c in columns
            )
            self._execute(
                f"INSERT INTO {grain.table} ({', '.join(columns)}, count, {revenue}, "  # noqa: S608
                f"revenue_events) SELECT {selects}, sum(count), {self._dialect.sum_revenue}, "
                f"sum(revenue_events) FROM {finest} GROUP BY {selects}"
            )

    # ------------------------------------------------------------------ writes

    def stored_offsets(self, consumer: str, topic: str) -> dict[int, int]:
        """Partition -> the next offset to consume, as last committed with the rollups."""
        with self._lock:
            rows = self._execute(
                "SELECT partition, next_offset FROM kpi_offsets WHERE consumer = ? AND topic = ?",
                (consumer, topic),
            ).fetchall()
        return {int(partition): int(offset) for partition, offset in rows}

    def write_batch(
        self, consumer: str, topic: str, batch: Sequence[Consumed], dedup_window_s: float
    ) -> BatchResult:
        """Apply ``batch`` exactly once (see the module docstring), in one transaction."""
        partitions = sorted({item.partition for item in batch})
        with self._transaction():
            self._executemany(
                "INSERT INTO kpi_offsets (consumer, topic, partition, next_offset) "
                "VALUES (?, ?, ?, 0) ON CONFLICT DO NOTHING",
                [(consumer, topic, p) for p in partitions],
            )
            stored: dict[int, int] = {}
            for chunk in _chunks(partitions):
                marks = ", ".join("?" * len(chunk))
                rows = self._execute(
                    "SELECT partition, next_offset FROM kpi_offsets WHERE consumer = ? "  # noqa: S608
                    f"AND topic = ? AND partition IN ({marks}){self._dialect.for_update}",
                    (consumer, topic, *chunk),
                ).fetchall()
                stored.update({int(p): int(o) for p, o in rows})
            fresh = [item for item in batch if item.offset >= stored.get(item.partition, 0)]
            already = len(batch) - len(fresh)
            records = [item.record for item in fresh if item.record is not None]
            unreadable = len(fresh) - len(records)
            counted, duplicates = self._new_activities(records)
            deltas = aggregate(counted)
            self._upsert_rollups(deltas)
            self._record_fingerprints(counted)
            self._record_tracker_nodes(deltas)
            next_offsets: dict[int, int] = {}
            for item in fresh:
                next_offsets[item.partition] = max(
                    next_offsets.get(item.partition, 0), item.offset + 1
                )
            self._executemany(
                "UPDATE kpi_offsets SET next_offset = ? "
                "WHERE consumer = ? AND topic = ? AND partition = ?",
                [(offset, consumer, topic, p) for p, offset in next_offsets.items()],
            )
            if records:
                newest = max(millis_from_iso(r.received_at) for r in records)
                self._execute(
                    "DELETE FROM kpi_fingerprints WHERE seen_ms < ?",
                    (newest - int(dedup_window_s * 1000),),
                )
        return BatchResult(
            counted=len(counted),
            duplicates=duplicates,
            already_applied=already,
            unreadable=unreadable,
            rows=len(deltas),
            offsets=next_offsets,
        )

    def _new_activities(self, records: list[CallbackRecord]) -> tuple[list[CallbackRecord], int]:
        """The records whose fingerprint is neither stored nor earlier in this batch."""
        fingerprints = sorted({r.fingerprint for r in records})
        known: set[str] = set()
        for chunk in _chunks(fingerprints):
            marks = ", ".join("?" * len(chunk))
            rows = self._execute(
                f"SELECT fingerprint FROM kpi_fingerprints WHERE fingerprint IN ({marks})",  # noqa: S608
                chunk,
            ).fetchall()
            known.update(row[0] for row in rows)
        counted: list[CallbackRecord] = []
        for record in records:
            if record.fingerprint in known:
                continue
            known.add(record.fingerprint)
            counted.append(record)
        return counted, len(records) - len(counted)

    def _upsert_rollups(self, deltas: Mapping[RollupKey, Measures]) -> None:
        rows = {_key_values(key): m for key, m in deltas.items()}
        self._upsert_grain(FINEST, rows)
        for grain in GRAINS[:-1]:
            self._upsert_grain(grain, _coarsen(rows, grain))

    def _upsert_grain(self, grain: Grain, rows: Mapping[tuple[Any, ...], Measures]) -> None:
        key_columns = _key_columns(grain)
        columns = ", ".join(key_columns)
        dialect = self._dialect
        revenue = ", ".join(dialect.revenue_columns)
        marks = ", ".join("?" * (len(key_columns) + 2 + len(dialect.revenue_columns)))
        table = grain.table
        sql = (
            f"INSERT INTO {table} ({columns}, count, {revenue}, revenue_events) "  # noqa: S608
            f"VALUES ({marks}) ON CONFLICT ({columns}) DO UPDATE SET "
            f"count = {table}.count + excluded.count, "
            f"{dialect.add_revenue.format(t=table)}, "
            f"revenue_events = {table}.revenue_events + excluded.revenue_events"
        )
        self._executemany(
            sql,
            [
                (*key, m.count, *dialect.revenue_params(m.revenue), m.revenue_events)
                for key, m in sorted(rows.items())  # one lock order for concurrent writers
            ],
        )

    def _record_fingerprints(self, counted: list[CallbackRecord]) -> None:
        self._executemany(
            "INSERT INTO kpi_fingerprints (fingerprint, seen_ms) VALUES (?, ?) "
            "ON CONFLICT DO NOTHING",
            [(r.fingerprint, millis_from_iso(r.received_at)) for r in counted],
        )

    def _record_tracker_nodes(self, deltas: Mapping[RollupKey, Measures]) -> None:
        nodes: set[tuple[str, str, int, str, str, str, str]] = set()
        for key in deltas:
            names = key.names
            for level in range(1, len(TRACKER_LEVELS) + 1):
                path = names[:level]
                padded = (*path, *([""] * (len(TRACKER_LEVELS) - level)))
                nodes.add((key.app, node_token(path), level, *padded))  # type: ignore[arg-type]
        self._executemany(
            "INSERT INTO kpi_tracker_nodes "
            "(app, token, level, network, campaign, adgroup, creative) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            sorted(nodes),
        )

    # ------------------------------------------------------------------ reads

    def tracker_nodes(self, app: str) -> list[TrackerNode]:
        """Every node of ``app``'s tracker tree seen so far."""
        with self._lock:
            rows = self._execute(
                "SELECT token, level, network, campaign, adgroup, creative "
                "FROM kpi_tracker_nodes WHERE app = ?",
                (app,),
            ).fetchall()
        return [
            TrackerNode(app, token, int(level), tuple(names[: int(level)]))
            for token, level, *names in rows
        ]

    def aggregate(
        self,
        *,
        app: str,
        environment: str,
        start_bucket: int,
        end_bucket: int,
        filters: Mapping[str, Sequence[str]],
        group: Sequence[GroupExpr],
    ) -> list[AggregateRow]:
        """Sums over buckets in ``[start_bucket, end_bucket)``, grouped by ``group`` and
        always by activity kind, event token, rejection reason and currency.

        ``filters`` maps a dimension to its allowed values (an empty list matches
        nothing). A :class:`Bucketed` group yields the local period's number
        (``(bucket + offset_s) // seconds``).
        """
        selects: list[str] = []
        for expr in group:
            if isinstance(expr, Bucketed):
                selects.append(f"(bucket + {int(expr.offset_s)}) / {int(expr.seconds)}")
            elif expr in DIMENSIONS:
                selects.append(expr)
            else:
                raise ValueError(f"not a dimension: {expr!r}")
        where = ["app = ?", "environment = ?", "bucket >= ?", "bucket < ?"]
        params: list[Any] = [app, environment, start_bucket, end_bucket]
        for column, values in sorted(filters.items()):
            if column not in DIMENSIONS:
                raise ValueError(f"not a dimension: {column!r}")
            if not values:
                where.append("1 = 0")
                continue
            where.append(f"{column} IN ({', '.join('?' * len(values))})")
            params.extend(values)
        fixed = ["activity_kind", "event_token", "rejection_reason", "currency"]
        grouped = [*selects, *fixed]
        dialect = self._dialect
        grains = usable(
            [(e.seconds, e.offset_s) for e in group if isinstance(e, Bucketed)],
            [*(e for e in group if isinstance(e, str)), *filters],
        )
        width = len(selects)
        merged: dict[tuple[Any, ...], list[Any]] = {}
        for piece in pieces(start_bucket, end_bucket, grains):
            sql = (
                f"SELECT {', '.join(grouped)}, sum(count), {dialect.sum_revenue}, "  # noqa: S608
                f"sum(revenue_events) FROM {piece.grain.table} WHERE {' AND '.join(where)} "
                f"GROUP BY {', '.join(grouped)}"
            )
            bounds = [app, environment, piece.start, piece.end]
            with self._lock:
                rows = self._execute(sql, (*bounds, *params[4:])).fetchall()
            for row in rows:
                key = tuple(row[: width + 4])
                count = int(row[width + 4])
                revenue = dialect.revenue_of(row[width + 5 : -1])
                events = int(row[-1])
                sums = merged.get(key)
                if sums is None:
                    merged[key] = [count, revenue, events]
                else:
                    sums[0] += count
                    sums[1] += revenue
                    sums[2] += events
        return [
            AggregateRow(
                group=key[:width],
                activity_kind=key[width],
                event_token=key[width + 1],
                rejection_reason=key[width + 2],
                currency=key[width + 3],
                count=count,
                revenue=tidy(revenue),
                revenue_events=events,
            )
            for key, (count, revenue, events) in merged.items()
        ]


class Statements:
    """Statements inside :meth:`KpiStore.transaction`."""

    def __init__(self, store: KpiStore) -> None:
        self._store = store

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cursor = self._store._execute(sql, params)
        return [tuple(row) for row in cursor.fetchall()] if cursor.description else []

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._store._executemany(sql, rows)


def _key_values(key: RollupKey) -> tuple[Any, ...]:
    return tuple(getattr(key, column) for column in KEY_COLUMNS)


_BUCKET_INDEX = KEY_COLUMNS.index("bucket")


def _coarsen(
    rows: Mapping[tuple[Any, ...], Measures], grain: Grain
) -> dict[tuple[Any, ...], Measures]:
    """15-minute deltas summed into ``grain``'s periods and key (the bucket's start moved
    down, the dimensions it does not keep dropped)."""
    out: dict[tuple[Any, ...], Measures] = {}
    kept = [i for i, c in enumerate(KEY_COLUMNS) if c in _key_columns(grain) and c != "bucket"]
    b, seconds = _BUCKET_INDEX, grain.seconds
    for key, measures in rows.items():
        bucket = key[b]
        dims = [key[i] for i in kept]
        coarse = (*dims[:b], bucket - bucket % seconds, *dims[b:])
        existing = out.get(coarse)
        if existing is None:
            out[coarse] = Measures(measures.count, measures.revenue, measures.revenue_events)
        else:
            existing.add(measures)
    return out


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]
