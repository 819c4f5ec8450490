"""Callbacks we answered 4xx, per app, quarter-hour, activity kind and reason.

The receiver's notes (:mod:`postback_hub.service.rejections`) arrive on
``<callbacks topic>.rejections``; :func:`write_notes` adds a batch of them to
``kpi_rejections`` exactly once: the topic's offsets are kept in
``kpi_offsets`` in the same transaction (as the rollups' are), and a note below
its partition's stored offset is skipped. :func:`counts_by_day` reads them back
per local day of a UTC offset, for reconciliation.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from postback_hub.kpi.store import KpiStore
from postback_hub.service.rejections import RejectionNote

_EPOCH = date(1970, 1, 1)
_DAY_S = 86_400


@dataclass(frozen=True, slots=True)
class NoteMessage:
    """One message of the rejections topic; ``note`` is None when unreadable."""

    partition: int
    offset: int
    note: RejectionNote | None


def write_notes(store: KpiStore, consumer: str, topic: str, batch: Sequence[NoteMessage]) -> int:
    """Count ``batch``'s notes once (see the module docstring); how many were added."""
    partitions = sorted({m.partition for m in batch})
    with store.transaction() as tx:
        tx.executemany(
            "INSERT INTO kpi_offsets (consumer, topic, partition, next_offset) "
            "VALUES (?, ?, ?, 0) ON CONFLICT DO NOTHING",
            [(consumer, topic, p) for p in partitions],
        )
        stored: dict[int, int] = {}
        for partition in partitions:
            rows = tx.execute(
                "SELECT next_offset FROM kpi_offsets WHERE consumer = ? AND topic = ? "  # noqa: S608
                f"AND partition = ?{store.for_update}",
                (consumer, topic, partition),
            )
            stored[partition] = int(rows[0][0]) if rows else 0
        fresh = [m for m in batch if m.offset >= stored.get(m.partition, 0)]
        counts: dict[tuple[str, int, str, str], int] = defaultdict(int)
        for message in fresh:
            if message.note is not None:
                n = message.note
                counts[(n.app, n.bucket, n.kind, n.reason)] += 1
        tx.executemany(
            "INSERT INTO kpi_rejections (app, bucket, activity_kind, reason, count) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (app, bucket, activity_kind, reason) "
            "DO UPDATE SET count = kpi_rejections.count + excluded.count",
            [(*key, count) for key, count in sorted(counts.items())],
        )
        next_offsets: dict[int, int] = {}
        for message in fresh:
            next_offsets[message.partition] = max(
                next_offsets.get(message.partition, 0), message.offset + 1
            )
        tx.executemany(
            "UPDATE kpi_offsets SET next_offset = ? "
            "WHERE consumer = ? AND topic = ? AND partition = ?",
            [(offset, consumer, topic, p) for p, offset in sorted(next_offsets.items())],
        )
    return sum(counts.values())


def counts_by_day(
    store: KpiStore, app: str, start: date, end: date, utc_offset_s: int
) -> dict[tuple[date, str], dict[str, int]]:
    """(local day, activity kind) -> reason -> count, for the days ``start``..``end``."""
    first = (start - _EPOCH).days * _DAY_S - utc_offset_s
    last = ((end - _EPOCH).days + 1) * _DAY_S - utc_offset_s
    rows = store.read(
        "SELECT bucket, activity_kind, reason, count FROM kpi_rejections "
        "WHERE app = ? AND bucket >= ? AND bucket < ?",
        (app, first, last),
    )
    out: dict[tuple[date, str], dict[str, int]] = defaultdict(dict)
    for bucket, kind, reason, count in rows:
        day = _EPOCH + timedelta(days=(int(bucket) + utc_offset_s) // _DAY_S)
        reasons = out[(day, str(kind))]
        reasons[str(reason)] = reasons.get(str(reason), 0) + int(count)
    return dict(out)
