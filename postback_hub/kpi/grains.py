"""Which rollup table answers which part of a time range. Pure.

The store keeps the rollups at four grains, written in the same transaction:
15-minute buckets with every dimension (``kpi_rollups``, the grain of record),
and hours (``kpi_rollups_hourly``), UTC days (``kpi_rollups_daily``) and 7-day
periods (``kpi_rollups_weekly``, from a Thursday as Unix time's weeks are) at the
network level: without the tracker token, campaign, adgroup and creative, the
long tail that makes nearly every fine row unique. A query that neither groups
nor filters by those (the overview by networks, countries, OS, device types or
periods, and reconciliation) reads a range from the coarsest table wherever
its periods lie wholly inside the range, and from finer ones at the edges: a
31-day range at ``+05:30`` is four 7-day periods from the weekly table, two UTC
days from the daily table, the remaining hours from the hourly table and the two
half hours from the 15-minute table.
Drill-downs below the network read the 15-minute table.

A query grouped by periods (local hours or days at a UTC offset) may only use
a grain whose periods nest in its own: a UTC day lies within one local day
only at offset 00:00, a UTC hour within one local hour or day only at a
whole-hour offset. Every offset Adjust offers is a multiple of 15 minutes, so
the 15-minute grain nests in every period.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from postback_hub.kpi.rollup import BUCKET_S

# Dimensions only the 15-minute table keeps.
DETAIL = frozenset({"tracker", "campaign", "adgroup", "creative"})


@dataclass(frozen=True, slots=True)
class Grain:
    table: str
    seconds: int  # period length; periods start at multiples of it (Unix time)
    detailed: bool  # keeps the DETAIL dimensions


GRAINS: tuple[Grain, ...] = (
    Grain("kpi_rollups_weekly", 7 * 86_400, detailed=False),
    Grain("kpi_rollups_daily", 86_400, detailed=False),
    Grain("kpi_rollups_hourly", 3_600, detailed=False),
    Grain("kpi_rollups", BUCKET_S, detailed=True),
)
FINEST = GRAINS[-1]


@dataclass(frozen=True, slots=True)
class Piece:
    """Read ``grain.table`` for buckets in ``[start, end)``."""

    grain: Grain
    start: int
    end: int


def usable(periods: Iterable[tuple[int, int]], columns: Iterable[str] = ()) -> tuple[Grain, ...]:
    """The grains that keep every dimension in ``columns`` (grouped or filtered by) and
    nest in every (seconds, offset_s) period the query groups by; the finest always."""
    wanted = list(periods)
    detail = not DETAIL.isdisjoint(columns)
    return tuple(
        grain
        for grain in GRAINS
        if grain is FINEST
        or (
            (grain.detailed or not detail)
            and all(
                seconds % grain.seconds == 0 and offset % grain.seconds == 0
                for seconds, offset in wanted
            )
        )
    )


def pieces(start: int, end: int, grains: Sequence[Grain]) -> list[Piece]:
    """``[start, end)`` cut into pieces, each read from the coarsest grain that tiles it.

    The pieces are disjoint and cover the range exactly; the last grain takes
    whatever is left, so it must be the finest.
    """
    if start >= end:
        return []
    grain, finer = grains[0], grains[1:]
    if not finer:
        return [Piece(grain, start, end)]
    first = -(-start // grain.seconds) * grain.seconds  # ceil to the grain
    last = end // grain.seconds * grain.seconds
    if first >= last:
        return pieces(start, end, finer)
    return [
        *pieces(start, first, finer),
        Piece(grain, first, last),
        *pieces(last, end, finer),
    ]
