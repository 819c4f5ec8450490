"""The KPI store's one read API: :func:`run_query` answers a :class:`KpiQuery`.

Both the KPI API and the reconciliation with Adjust's own numbers read through
here, so a figure means the same in both. Days are local days at the query's
UTC offset (a whole number of the store's 15-minute buckets); an activity
belongs to the day it happened, never to the day its callback arrived.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Literal

from postback_hub.kpi.rollup import TRACKER_LEVELS
from postback_hub.kpi.store import AggregateRow, Bucketed, GroupExpr, KpiStore, node_token

TRACKER_GROUPINGS = {"trackers": 0, "networks": 1, "campaigns": 2, "adgroups": 3, "creatives": 4}
PERIOD_GROUPINGS = frozenset({"hour", "day", "week", "month"})
DIMENSION_GROUPINGS = {
    "countries": "country",
    "os_names": "os_name",
    "device_types": "device_type",
    "events": "event_token",
}
GROUPINGS = frozenset(TRACKER_GROUPINGS) | PERIOD_GROUPINGS | frozenset(DIMENSION_GROUPINGS)
_EPOCH = date(1970, 1, 1)
_DAY_S = 86_400


@dataclass(frozen=True, slots=True)
class TrackerScope:
    """A tracker the query is limited to: a node of the name tree (``names`` down to its
    level) or, when the token is no node of ours, Adjust's own tracker token."""

    token: str
    names: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class KpiQuery:
    """What to sum. ``start`` and ``end`` are inclusive local dates at ``utc_offset_s``.

    A filter of None means "any value"; ``grouping`` holds names of :data:`GROUPINGS`
    in nesting order. ``trackers`` groups one level below ``tracker`` (networks when
    there is none); ``networks`` .. ``creatives`` group at that level.
    """

    app: str
    start: date
    end: date
    utc_offset_s: int = 0
    sandbox: bool = False
    countries: tuple[str, ...] | None = None
    os_names: tuple[str, ...] | None = None
    device_types: tuple[str, ...] | None = None
    event_tokens: tuple[str, ...] | None = None
    reattributed: Literal["all", "true", "false"] = "all"
    tracker: TrackerScope | None = None
    grouping: tuple[str, ...] = ()


@dataclass(slots=True)
class Sums:
    """Additive figures of one group, by activity kind and, for events, by token."""

    counts: Counter[str] = field(default_factory=Counter)  # activity kind -> count
    rejected: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, reason)
    # (activity kind, currency) -> revenue; currency "" when the callback named none
    revenue: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    revenue_events: int = 0
    events: Counter[str] = field(default_factory=Counter)  # event token -> count
    event_revenue: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    event_revenue_events: Counter[str] = field(default_factory=Counter)

    def add(self, row: AggregateRow) -> None:
        kind = row.activity_kind
        self.counts[kind] += row.count
        if row.rejection_reason:
            self.rejected[(kind, row.rejection_reason)] += row.count
        if row.revenue:
            key = (kind, row.currency)
            self.revenue[key] = self.revenue.get(key, Decimal(0)) + row.revenue
        if kind == "event":
            self.revenue_events += row.revenue_events
            self.events[row.event_token] += row.count
            self.event_revenue_events[row.event_token] += row.revenue_events
            if row.revenue:
                key = (row.event_token, row.currency)
                self.event_revenue[key] = self.event_revenue.get(key, Decimal(0)) + row.revenue


@dataclass(frozen=True, slots=True)
class TrackerInfo:
    token: str
    level: int  # 1 network .. 4 creative; 0 for Adjust's own token
    names: tuple[str, ...]
    has_subtrackers: bool

    @property
    def name(self) -> str:
        return self.names[-1] if self.names else self.token


@dataclass(frozen=True, slots=True)
class QueryResult:
    """Groups in order; a group's key holds one value per grouping: a tracker token
    (see ``trackers``), a date ``YYYY-MM-DD`` (the period's first day; hours as
    ``YYYY-MM-DDTHH:00``), or the dimension's value.

    ``revenue_currencies`` counts, over the whole query, the callbacks that carried
    revenue in a named currency (any activity kind), by currency: the store keeps the
    currency in its key, so what :meth:`left_out` of a reporting currency is known.
    """

    groups: list[tuple[tuple[str, ...], Sums]]
    trackers: dict[str, TrackerInfo]
    event_tokens: list[str]
    revenue_currencies: dict[str, int] = field(default_factory=dict)

    def left_out(self, currency: str) -> dict[str, int]:
        """Currency -> callbacks whose revenue is not counted in ``currency`` (never
        converted); revenue sent without a currency is taken to be in ``currency``."""
        return {
            other: n
            for other, n in sorted(self.revenue_currencies.items())
            if other not in ("", currency) and n
        }


def utc_range(query: KpiQuery) -> tuple[int, int]:
    """The query's local dates as UTC bucket bounds ``[start, end)`` in Unix seconds."""
    start = (query.start - _EPOCH).days * _DAY_S - query.utc_offset_s
    end = ((query.end - _EPOCH).days + 1) * _DAY_S - query.utc_offset_s
    return start, end


def resolve_tracker(store: KpiStore, app: str, token: str) -> TrackerScope:
    for node in store.tracker_nodes(app):
        if node.token == token:
            return TrackerScope(token, node.names)
    return TrackerScope(token)


def _tracker_level(query: KpiQuery, grouping: str) -> int:
    fixed = TRACKER_GROUPINGS[grouping]
    if fixed:
        return fixed
    scope = query.tracker
    if scope is None:
        return 1
    if scope.names is None:
        return 0  # Adjust's own token: its rows, by that token
    return min(len(scope.names) + 1, len(TRACKER_LEVELS))


def _period(grouping: str, number: int) -> str:
    if grouping == "hour":
        moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(hours=number)
        return moment.strftime("%Y-%m-%dT%H:00")
    day = _EPOCH + timedelta(days=number)
    if grouping == "week":
        day -= timedelta(days=day.weekday())  # weeks start on Monday
    elif grouping == "month":
        day = day.replace(day=1)
    return day.isoformat()


def run_query(store: KpiStore, query: KpiQuery) -> QueryResult:
    """Sum the store's rollups for ``query`` (blocking: call it in a thread)."""
    filters: dict[str, list[str]] = {}
    for dimension, allowed in (
        ("country", query.countries),
        ("os_name", query.os_names),
        ("device_type", query.device_types),
        ("event_token", query.event_tokens),
    ):
        if allowed is not None:
            filters[dimension] = list(allowed)
    if query.reattributed != "all":
        filters["attribution"] = ["reattributed" if query.reattributed == "true" else "installed"]
    if query.tracker is not None:
        if query.tracker.names is None:
            filters["tracker"] = [query.tracker.token]
        else:
            for column, name in zip(TRACKER_LEVELS, query.tracker.names, strict=False):
                filters[column] = [name]

    exprs: list[GroupExpr] = []
    spans: list[tuple[str, int, int]] = []  # grouping, first column, width
    for grouping in query.grouping:
        first = len(exprs)
        if grouping in TRACKER_GROUPINGS:
            level = _tracker_level(query, grouping)
            exprs.extend(["tracker"] if level == 0 else TRACKER_LEVELS[:level])
        elif grouping == "hour":
            exprs.append(Bucketed(3600, query.utc_offset_s))
        elif grouping in PERIOD_GROUPINGS:
            exprs.append(Bucketed(_DAY_S, query.utc_offset_s))
        else:
            exprs.append(DIMENSION_GROUPINGS[grouping])
        spans.append((grouping, first, len(exprs) - first))

    start, end = utc_range(query)
    rows = store.aggregate(
        app=query.app,
        environment="sandbox" if query.sandbox else "production",
        start_bucket=start,
        end_bucket=end,
        filters=filters,
        group=exprs,
    )
    nodes = (
        store.tracker_nodes(query.app)
        if any(g in TRACKER_GROUPINGS for g in query.grouping)
        else []
    )
    parents = {n.names[:-1] for n in nodes if n.level > 1 and n.names[-1]}
    tokens: dict[tuple[str, ...], str] = {}  # names -> node token, hashed once each
    trackers: dict[str, TrackerInfo] = {}
    groups: dict[tuple[str, ...], Sums] = {}
    event_tokens: set[str] = set()
    currencies: Counter[str] = Counter()
    for row in rows:
        if row.currency:
            currencies[row.currency] += row.count
        key: list[str] = []
        for grouping, first, width in spans:
            part = row.group[first : first + width]
            if grouping in TRACKER_GROUPINGS and exprs[first] != "tracker":
                names = tuple(str(v) for v in part)
                token = tokens.get(names) or tokens.setdefault(names, node_token(names))
                if token not in trackers:
                    trackers[token] = TrackerInfo(token, len(names), names, names in parents)
                key.append(token)
            elif grouping in TRACKER_GROUPINGS:
                token = str(part[0])
                trackers[token] = TrackerInfo(token, 0, (), False)
                key.append(token)
            elif grouping in PERIOD_GROUPINGS:
                key.append(_period(grouping, int(part[0])))
            else:
                key.append(str(part[0]))
        group_key = tuple(key)
        sums = groups.get(group_key)
        if sums is None:
            sums = groups[group_key] = Sums()
        sums.add(row)
        if row.activity_kind == "event":
            event_tokens.add(row.event_token)
    ordered = sorted(groups.items(), key=lambda item: item[0])
    return QueryResult(ordered, trackers, sorted(event_tokens), dict(currencies))
