"""Requests to Adjust's two pull APIs and the parsing of their answers. Pure.

Both back ends are asked the same question, "these KPIs per (dimension, ...)
for these days, under the binding's settings", and both answers become one
:class:`Table`: exact :class:`~decimal.Decimal` values keyed by the dimension
values (in the order asked) and our KPI name.

Our KPI names: ``installs``, ``reattributions``, ``reinstalls``,
``rejected_installs``, ``rejected_reattributions``, ``sessions``, and per
event ``events:TOKEN`` / ``revenue:TOKEN`` (``TOKEN`` is ``tok1+tok2`` when
one Report Service event slug covers several event tokens).

Nothing is left to the APIs' defaults: every request names the binding's UTC
offset, attribution types and source, attribution status, currency (Report
Service), ad revenue sources (when the binding lists any) and ``sandbox=false``.
A setting one API cannot express is a :class:`Inexpressible` error, never a
silent default.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

Backend = Literal["report_service", "kpi_service"]
Format = Literal["json", "csv"]

# Our activity KPIs -> the activity kind our store counts them under.
ACTIVITY_KPIS: dict[str, str] = {
    "installs": "install",
    "reattributions": "reattribution",
    "reinstalls": "reinstall",
    "rejected_installs": "rejected_install",
    "rejected_reattributions": "rejected_reattribution",
    "sessions": "session",
}
# Our grouping names -> (Report Service dimension, KPI Service v1 grouping).
GROUPINGS: dict[str, tuple[str, str]] = {
    "day": ("day", "days"),
    "network": ("network", "networks"),
    "campaign": ("campaign", "campaigns"),
    "adgroup": ("adgroup", "adgroups"),
    "creative": ("creative", "creatives"),
    "country": ("country_code", "countries"),
    "os_name": ("os_name", "os_names"),
    "device_type": ("device_type", "device_types"),
}
# KPI v1 nesting level -> the field of an item naming its value.
_KPI_LEVEL_FIELD = {
    "dates": "date",
    "networks": "name",
    "campaigns": "name",
    "adgroups": "name",
    "creatives": "name",
    "trackers": "name",
    "countries": "country",
    "os_names": "os_name",
    "device_types": "device_type",
}
_KPI_LEVEL_OF = {
    "days": "dates",
    "day": "dates",
    "networks": "networks",
    "campaigns": "campaigns",
    "adgroups": "adgroups",
    "creatives": "creatives",
    "countries": "countries",
    "os_names": "os_names",
    "device_types": "device_types",
}
# CSV column names (KPI v1) per grouping.
_KPI_CSV_COLUMN = {
    "days": "date",
    "networks": "network",
    "campaigns": "campaign",
    "adgroups": "adgroup",
    "creatives": "creative",
    "countries": "country",
    "os_names": "os_name",
    "device_types": "device_type",
}
TOKEN = re.compile(r"^[A-Za-z0-9]{1,64}$")
UTC_OFFSET = re.compile(r"^[+-](0\d|1[0-4]):(00|15|30|45)$")


class PullProblem(ValueError):
    """An answer we cannot read, or a request we refuse to make. Safe to print."""


class Inexpressible(PullProblem):
    """A binding setting the chosen API has no parameter for."""


@dataclass(frozen=True, slots=True)
class Binding:
    """What a pull needs of one app binding (built from the ``[apps.KEY.adjust]`` table)."""

    app: str  # our app key
    app_token: str
    utc_offset: str  # [+-]HH:MM
    attribution_types: tuple[str, ...]  # click, impression, engaged_ad
    attribution_source: str  # first | dynamic
    attribution_status: str  # all | false (installed users) | true (reattributed users)
    currency: str
    ad_revenue_sources: tuple[str, ...] = ()
    sandbox: bool = False
    sessions: bool = False  # compare sessions (the account's callbacks include them)

    def offset_seconds(self) -> int:
        return offset_seconds(self.utc_offset)


def offset_seconds(utc_offset: str) -> int:
    if not UTC_OFFSET.match(utc_offset):
        raise PullProblem(f"utc_offset {utc_offset!r} is not [+-]HH:MM in quarter hours")
    sign = -1 if utc_offset[0] == "-" else 1
    return sign * (int(utc_offset[1:3]) * 3600 + int(utc_offset[4:6]) * 60)


@dataclass(frozen=True, slots=True)
class EventSlug:
    """A Report Service event: its slug and the event tokens it covers."""

    slug: str
    tokens: tuple[str, ...]

    @property
    def key(self) -> str:
        return "+".join(sorted(self.tokens))


@dataclass(frozen=True, slots=True)
class Query:
    """One question: KPIs by ``grouping`` for the days ``start``..``end`` (inclusive)."""

    start: date
    end: date
    grouping: tuple[str, ...] = ("day", "network", "country")

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise PullProblem("the end date is before the start date")
        unknown = [g for g in self.grouping if g not in GROUPINGS]
        if unknown:
            raise PullProblem(
                f"unknown grouping {', '.join(unknown)} (known: {', '.join(GROUPINGS)})"
            )


Key = tuple[tuple[str, ...], str]  # (dimension values in grouping order, our KPI name)


@dataclass(slots=True)
class Table:
    """Adjust's numbers for one binding and query."""

    grouping: tuple[str, ...]
    values: dict[Key, Decimal] = field(default_factory=dict)
    currency: str | None = None  # the currency Adjust says its revenue is in
    # Settings Adjust says it applied (KPI v1's result_parameters), by our setting name.
    applied: dict[str, str] = field(default_factory=dict)
    # Event KPI key -> the event tokens it covers.
    event_groups: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def add(self, dims: tuple[str, ...], kpi: str, value: Decimal) -> None:
        key = (dims, kpi)
        self.values[key] = self.values.get(key, Decimal(0)) + value

    def merge(self, other: Table) -> None:
        for (dims, kpi), value in other.values.items():
            self.add(dims, kpi, value)
        self.currency = self.currency or other.currency
        self.applied.update(other.applied)
        self.event_groups.update(other.event_groups)


def check_token(value: str, what: str) -> str:
    if not TOKEN.match(value):
        raise PullProblem(f"{what} must be letters and digits")
    return value


def _attribution_settings(binding: Binding) -> None:
    if binding.attribution_status not in ("all", "true", "false"):
        raise PullProblem("attribution_status is all, true or false")
    if binding.attribution_source not in ("first", "dynamic"):
        raise PullProblem("attribution_source is first or dynamic")
    unknown = set(binding.attribution_types) - {"click", "impression", "engaged_ad"}
    if unknown or not binding.attribution_types:
        raise PullProblem("attribution_types are one or more of click, impression, engaged_ad")


# ---------------------------------------------------------------- Report Service


def report_service_params(
    binding: Binding, query: Query, events: Sequence[EventSlug]
) -> list[tuple[str, str]]:
    """The query string of ``/report`` and ``/csv_report`` for ``query``."""
    _attribution_settings(binding)
    check_token(binding.app_token, "app_token")
    metrics = [kpi for kpi in ACTIVITY_KPIS if kpi != "sessions" or binding.sessions]
    for event in events:
        metrics += [f"{event.slug}_events", f"{event.slug}_revenue"]
    params = [
        ("app_token__in", binding.app_token),
        ("date_period", f"{query.start.isoformat()}:{query.end.isoformat()}"),
        ("dimensions", ",".join(GROUPINGS[g][0] for g in query.grouping)),
        ("metrics", ",".join(metrics)),
        ("utc_offset", binding.utc_offset),
        ("attribution_types", ",".join(binding.attribution_types)),
        ("attribution_source", binding.attribution_source),
        ("reattributed", binding.attribution_status),
        ("currency", binding.currency),
        ("sandbox", "true" if binding.sandbox else "false"),
    ]
    if binding.ad_revenue_sources:
        params.append(("ad_revenue_sources", ",".join(binding.ad_revenue_sources)))
    return params


def report_service_events(body: bytes, app_token: str) -> list[EventSlug]:
    """The ``/events`` answer: the app's event slugs and the tokens each covers."""
    data = _json(body)
    if not isinstance(data, list):
        raise PullProblem("the events answer is not a list")
    slugs: list[EventSlug] = []
    for item in data:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            raise PullProblem("an event in the events answer has no id")
        apps = item.get("app_token")
        if isinstance(apps, list) and apps and app_token not in apps:
            continue
        tokens = tuple(t for t in item.get("tokens") or () if isinstance(t, str) and TOKEN.match(t))
        slug = item["id"]
        if tokens and re.match(r"^[a-z0-9_]{1,128}$", slug):
            slugs.append(EventSlug(slug, tokens))
    return slugs


def _metric_kpi(metric: str, events: Mapping[str, EventSlug]) -> str | None:
    if metric in ACTIVITY_KPIS:
        return metric
    for suffix, name in (("_events", "events"), ("_revenue", "revenue")):
        if metric.endswith(suffix) and metric[: -len(suffix)] in events:
            return f"{name}:{events[metric[: -len(suffix)]].key}"
    return None


def parse_report_json(
    body: bytes, query: Query, events: Sequence[EventSlug]
) -> tuple[Table, str | None]:
    """One page of ``/report``: its rows and the next page's link (None on the last)."""
    data = _json(body)
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise PullProblem("the report answer has no rows")
    table = _report_table(query, events)
    reader = _RowReader(query, events)
    for row in data["rows"]:
        if not isinstance(row, dict):
            raise PullProblem("a report row is not an object")
        reader.add(table, row)
    pagination = data.get("pagination")
    next_link = None
    if isinstance(pagination, dict):
        candidate = pagination.get("next") or pagination.get("next_page_url")
        next_link = candidate if isinstance(candidate, str) and candidate else None
    return table, next_link


def parse_report_csv(body: bytes, query: Query, events: Sequence[EventSlug]) -> Table:
    """A ``/csv_report`` answer: a header of dimension and metric names, then rows."""
    table = _report_table(query, events)
    reader = _RowReader(query, events)
    for row in csv.DictReader(io.StringIO(_text(body))):
        reader.add(table, row)
    return table


def _report_table(query: Query, events: Sequence[EventSlug]) -> Table:
    return Table(query.grouping, event_groups={e.key: e.tokens for e in events})


class _RowReader:
    """Reads report rows into a table; a metric's KPI is worked out once per name."""

    def __init__(self, query: Query, events: Sequence[EventSlug]) -> None:
        self._grouping = query.grouping
        self._columns = [GROUPINGS[g][0] for g in query.grouping]
        self._skip = set(self._columns)
        self._events = {e.slug: e for e in events}
        self._kpis: dict[str, str | None] = {}

    def add(self, table: Table, row: Mapping[str, Any]) -> None:
        dims = tuple(
            _dimension(g, row.get(c)) for g, c in zip(self._grouping, self._columns, strict=True)
        )
        values = table.values
        for metric, raw in row.items():
            if metric in self._skip:
                continue
            try:
                kpi = self._kpis[metric]
            except KeyError:
                kpi = self._kpis[metric] = _metric_kpi(metric, self._events)
            if kpi is None:
                continue
            value = number(raw, metric)
            if value:
                key = (dims, kpi)
                found = values.get(key)
                values[key] = value if found is None else found + value


# ---------------------------------------------------------------- KPI Service v1

_KPI_TYPES = {
    frozenset({"click"}): "click",
    frozenset({"impression"}): "impression",
    frozenset({"click", "impression"}): "all",
}


def kpi_attribution_type(types: Sequence[str]) -> str:
    """KPI v1 knows click, impression or both ("all"); engaged_ad has no equivalent."""
    chosen = _KPI_TYPES.get(frozenset(types))
    if chosen is None:
        raise Inexpressible(
            f"KPI Service v1 cannot filter attribution types {','.join(sorted(types))} "
            "(click, impression or both): use the Report Service for this binding"
        )
    return chosen


def kpi_service_path(
    binding: Binding, fmt: Format, endpoint: str = "overview", tracker: str | None = None
) -> str:
    """``/APP[/trackers/TRACKER][/events].json|.csv`` below the base URL (``.../kpis/v1``)."""
    path = f"/{check_token(binding.app_token, 'app_token')}"
    if tracker is not None:
        path += f"/trackers/{check_token(tracker, 'tracker token')}"
    if endpoint == "events":
        path += "/events"
    elif endpoint != "overview":
        raise PullProblem("a KPI Service endpoint is overview or events")
    return f"{path}.{fmt}"


def kpi_service_params(
    binding: Binding, query: Query, event_tokens: Sequence[str], endpoint: str = "overview"
) -> list[tuple[str, str]]:
    """The query string of a KPI Service v1 request for ``query``.

    The overview asks the activity KPIs and, per event, ``TOKEN_events`` and
    ``TOKEN_revenue`` (or ``all_events,all_revenue`` when no token is known
    yet). The events endpoint has no ``reattributed`` parameter, so it serves
    only bindings that count all users.
    """
    _attribution_settings(binding)
    for token in event_tokens:
        check_token(token, "event token")
    grouping = [GROUPINGS[g][1] for g in query.grouping]
    params = [
        ("start_date", query.start.isoformat()),
        ("end_date", query.end.isoformat()),
        ("utc_offset", binding.utc_offset),
        ("attribution_type", kpi_attribution_type(binding.attribution_types)),
        ("attribution_source", binding.attribution_source),
        ("sandbox", "true" if binding.sandbox else "false"),
    ]
    if endpoint == "events":
        if binding.attribution_status != "all":
            raise Inexpressible(
                "the KPI Service events endpoint has no reattributed filter: "
                "use the overview for this binding"
            )
        params += [("kpis", "events,revenue"), ("grouping", ",".join([*grouping, "events"]))]
        if event_tokens:
            params.append(("events", ",".join(event_tokens)))
        return params
    kpis = [kpi for kpi in ACTIVITY_KPIS if kpi != "sessions" or binding.sessions]
    event_kpis = (
        [f"{t}_{m}" for t in event_tokens for m in ("events", "revenue")]
        if event_tokens
        else ["all_events", "all_revenue"]
    )
    params += [
        ("reattributed", binding.attribution_status),
        ("kpis", ",".join(kpis)),
        ("event_kpis", ",".join(event_kpis)),
        ("grouping", ",".join(grouping)),
    ]
    return params


def _kpi_name(name: str, *, events_endpoint: bool, event: str | None) -> str | None:
    if events_endpoint:
        if event is None or name not in ("events", "revenue"):
            return None
        return f"{name}:{event}"
    if name in ACTIVITY_KPIS:
        return name
    token, _, metric = name.rpartition("_")
    if metric in ("events", "revenue") and TOKEN.match(token):
        return f"{metric}:{token}"
    return None


def parse_kpi_json(body: bytes, query: Query, endpoint: str = "overview") -> Table:
    """A KPI Service v1 JSON answer: ``result_parameters`` names the KPIs in the order
    of each ``kpi_values`` array; ``result_set`` nests one level per grouping."""
    data = _json(body)
    if not isinstance(data, dict):
        raise PullProblem("the KPI answer is not an object")
    parameters = data.get("result_parameters")
    result = data.get("result_set")
    if not isinstance(parameters, dict) or not isinstance(result, dict):
        raise PullProblem("the KPI answer lacks result_parameters or result_set")
    names = parameters.get("kpis")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise PullProblem("result_parameters.kpis is not a list of names")
    grouping = [GROUPINGS[g][1] for g in query.grouping]
    levels = [_KPI_LEVEL_OF[g] for g in grouping]
    if endpoint == "events":
        levels.append("events")
    lookups = _kpi_lookups(parameters)
    table = Table(query.grouping)
    currency = result.get("currency")
    table.currency = currency if isinstance(currency, str) else None
    table.applied = _applied(parameters)
    events_endpoint = endpoint == "events"

    def walk(node: dict[str, Any], depth: int, dims: tuple[str, ...], event: str | None) -> None:
        if depth == len(levels):
            values = node.get("kpi_values")
            if not isinstance(values, list) or len(values) != len(names):
                raise PullProblem("kpi_values do not match result_parameters.kpis")
            for name, raw in zip(names, values, strict=True):
                kpi = _kpi_name(name, events_endpoint=events_endpoint, event=event)
                if kpi is not None:
                    table.add(dims, kpi, number(raw, name))
            return
        level = levels[depth]
        items = node.get(level, [])
        if not isinstance(items, list):
            raise PullProblem(f"result_set.{level} is not a list")
        for item in items:
            if not isinstance(item, dict):
                raise PullProblem(f"an item of {level} is not an object")
            if level == "events":
                token = item.get("token")
                if not isinstance(token, str):
                    raise PullProblem("an event item has no token")
                walk(item, depth + 1, dims, token)
                continue
            value = _kpi_level_value(level, item, lookups)
            walk(item, depth + 1, (*dims, _dimension(query.grouping[depth], value)), event)

    walk(result, 0, (), None)
    for kpi in {kpi for _, kpi in table.values}:
        if ":" in kpi:
            token = kpi.split(":", 1)[1]
            table.event_groups[token] = (token,)
    return table


def _kpi_lookups(parameters: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    lookups: dict[str, dict[str, str]] = {}
    for level in ("networks", "campaigns", "adgroups", "creatives", "trackers"):
        items = parameters.get(level)
        if isinstance(items, list):
            lookups[level] = {
                str(i["token"]): str(i["name"])
                for i in items
                if isinstance(i, dict) and "token" in i and "name" in i
            }
    return lookups


def _kpi_level_value(
    level: str, item: Mapping[str, Any], lookups: dict[str, dict[str, str]]
) -> Any:
    name_field = _KPI_LEVEL_FIELD[level]
    if name_field in item:
        return item[name_field]
    token = item.get("token")
    return lookups.get(level, {}).get(str(token), token)


def parse_kpi_csv(body: bytes, query: Query) -> Table:
    """A KPI Service v1 CSV answer (overview): one column per grouping, then the KPIs."""
    table = Table(query.grouping)
    columns = [_KPI_CSV_COLUMN[GROUPINGS[g][1]] for g in query.grouping]
    reader = csv.DictReader(io.StringIO(_text(body)))
    for row in reader:
        dims = tuple(
            _dimension(g, row.get(c)) for g, c in zip(query.grouping, columns, strict=True)
        )
        for name, raw in row.items():
            if name in columns:
                continue
            kpi = _kpi_name(name or "", events_endpoint=False, event=None)
            if kpi is not None:
                table.add(dims, kpi, number(raw, name or ""))
    for kpi in {kpi for _, kpi in table.values}:
        if ":" in kpi:
            token = kpi.split(":", 1)[1]
            table.event_groups[token] = (token,)
    return table


def _applied(parameters: Mapping[str, Any]) -> dict[str, str]:
    applied: dict[str, str] = {}
    for ours, theirs in (
        ("utc_offset", "utc_offset"),
        ("attribution_source", "attribution_source"),
        ("attribution_type", "attribution_type"),
        ("attribution_status", "reattributed"),
        ("sandbox", "sandbox"),
    ):
        value = parameters.get(theirs)
        if isinstance(value, bool):
            applied[ours] = "true" if value else "false"
        elif isinstance(value, str):
            applied[ours] = value
    return applied


# ---------------------------------------------------------------- shared


def number(raw: Any, name: str) -> Decimal:
    """An exact decimal from a string (Report Service) or a JSON number read as Decimal."""
    if isinstance(raw, bool):
        raise PullProblem(f"{safe(name)} is not a number")
    if isinstance(raw, int | Decimal):
        return Decimal(raw)
    if isinstance(raw, str):
        text = raw.strip()
        if text == "":
            return Decimal(0)
        try:
            value = Decimal(text)
        except InvalidOperation:
            raise PullProblem(f"{safe(name)} is not a number") from None
        if value.is_finite():
            return value
    raise PullProblem(f"{safe(name)} is not a number")


def _dimension(grouping: str, raw: Any) -> str:
    """A dimension value as our store writes it (countries and OS names lower-case)."""
    value = "" if raw is None else str(raw).strip()
    if grouping in ("country", "os_name", "device_type"):
        value = value.lower()
    return value


def _json(body: bytes) -> Any:
    try:
        return json.loads(body, parse_float=Decimal)
    except ValueError:
        raise PullProblem("the answer is not JSON") from None


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PullProblem("the answer is not UTF-8") from None


_UNSAFE = re.compile(r"[^\x20-\x7e]+")


def safe(text: str, limit: int = 200, secrets: Sequence[str] = ()) -> str:
    """Untrusted text (an API's error body, a name it sent) made fit for a log line:
    printable ASCII only, secrets masked, cut to ``limit`` characters."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = _UNSAFE.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"
