"""The KPI API: Adjust's KPI Service v1 overview and events endpoints over our own store.

Paths, parameters and answer shapes are the seed's (``/kpis/v1/{app_token}``,
``/trackers/{tracker_token}``, ``/events``; ``.json``, ``.csv`` or ``Accept:
text/csv``), so a client of Adjust's KPI Service only changes its base URL.
``{app_token}`` is the app's bound Adjust app token or its key in ``[apps]``.
Tokens are our own (``[kpi.tokens]``), each scoped to apps. Errors are
``{"error": {"code", "field", "message"}}``; a KPI callbacks cannot determine
is a 400 naming it and saying why.
"""

from __future__ import annotations

import asyncio
import calendar
import csv
import hmac
import io
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import orjson
from aiohttp import web

from postback_hub.kpi.kpis import (
    EventKpi,
    KpiError,
    Value,
    app_value,
    check_app_kpis,
    check_event_kpi,
    event_value,
    parse_event_kpis,
)
from postback_hub.kpi.query import (
    GROUPINGS,
    TRACKER_GROUPINGS,
    KpiQuery,
    QueryResult,
    Sums,
    resolve_tracker,
    run_query,
)
from postback_hub.kpi.store import KpiStore
from postback_hub.service.kpi_settings import KpiSettings
from postback_hub.service.settings import Settings

STORE = web.AppKey("kpi_store", KpiStore)
WARNINGS_HEADER = "X-Kpi-Warnings"

_OFFSET = re.compile(r"^([+-])?(\d{2}):(\d{2})$")
_TOKEN_HEADER = re.compile(r"^Token\s+token=(\S+)$")
_ALIASES = {
    "tracker": "trackers",
    "network": "networks",
    "campaign": "campaigns",
    "adgroup": "adgroups",
    "creative": "creatives",
    "country": "countries",
    "os_name": "os_names",
    "device_type": "device_types",
    "event": "events",
    "hours": "hour",
    "days": "day",
    "weeks": "week",
    "months": "month",
}
_LIST_KEYS = {
    **{g: g for g in TRACKER_GROUPINGS},
    "countries": "countries",
    "os_names": "os_names",
    "device_types": "device_types",
    "events": "events",
    **dict.fromkeys(("hour", "day", "week", "month"), "dates"),
}
_ID_FIELDS = {"countries": "country", "os_names": "os_name", "device_types": "device_type"}
_OVERVIEW_DEFAULT = (
    "clicks",
    "installs",
    "reattributions",
    "sessions",
    "revenue_events",
    "revenue",
)
_EVENTS_DEFAULT = ("events", "revenue_events", "revenue")
_MAX_DAYS = 366
_DECIMAL_MARK = "\x00decimal:"


class ApiError(Exception):
    def __init__(self, status: int, code: str, field: str | None, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.field, self.message = status, code, field, message

    def response(self) -> web.Response:
        body = {"error": {"code": self.code, "field": self.field, "message": self.message}}
        return web.json_response(body, status=self.status)


@dataclass(frozen=True, slots=True)
class ApiConfig:
    settings: KpiSettings
    apps: Mapping[str, str]  # the path's app token -> our app key
    tokens: tuple[tuple[bytes, frozenset[str]], ...]  # (secret, app keys or "*")


CONFIG = web.AppKey("kpi_config", ApiConfig)


def api_config(settings: Settings, app_tokens: Mapping[str, str] | None = None) -> ApiConfig:
    """``app_tokens`` maps bound Adjust app tokens to app keys; every key stands for itself."""
    apps = {key: key for key in settings.apps}
    apps.update(app_tokens or {})
    tokens = []
    for token in settings.kpi.tokens.values():
        if token.secret.problem is None:  # an unreadable secret admits nobody
            tokens.append((token.secret.reveal().encode(), frozenset(token.apps)))
    return ApiConfig(settings.kpi, apps, tuple(tokens))


# ---------------------------------------------------------------------- parameters


def _bad(field: str, message: str) -> ApiError:
    return ApiError(400, "invalid_parameter", field, message)


def parse_offset(text: str | None) -> int:
    """``[+-]HH:MM`` -> seconds; a multiple of 15 minutes (the store's bucket)."""
    if text is None or text == "":
        return 0
    match = _OFFSET.fullmatch(text.strip().replace(" ", "+"))  # a raw "+" decodes to " "
    if match is None:
        raise _bad("utc_offset", "expected [+-]HH:MM, e.g. -05:00 or 05:30")
    sign, hours, minutes = match.group(1), int(match.group(2)), int(match.group(3))
    if minutes >= 60 or minutes % 15 or hours > 14:
        raise _bad("utc_offset", "must be within ±14:00 in steps of 15 minutes")
    seconds = (hours * 60 + minutes) * 60
    return -seconds if sign == "-" else seconds


def format_offset(seconds: int) -> str:
    sign = "-" if seconds < 0 else ""
    minutes = abs(seconds) // 60
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def _date(text: str, field: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise _bad(field, "expected YYYY-MM-DD") from None


def _dates(query: Mapping[str, str], offset_s: int) -> tuple[date, date]:
    start_text, end_text = query.get("start_date"), query.get("end_date")
    today = (datetime.now(UTC) + timedelta(seconds=offset_s)).date()
    start = _date(start_text, "start_date") if start_text else today.replace(day=1)
    if end_text:
        end = _date(end_text, "end_date")
    elif start_text:
        end = start.replace(day=calendar.monthrange(start.year, start.month)[1])
    else:
        end = today.replace(day=calendar.monthrange(today.year, today.month)[1])
    if end < start:
        raise _bad("end_date", "must not be before start_date")
    if (end - start).days >= _MAX_DAYS:
        raise _bad("end_date", f"a query covers at most {_MAX_DAYS} days")
    return start, end


def _list(query: Mapping[str, str], name: str) -> tuple[str, ...] | None:
    text = query.get(name)
    if text is None:
        return None
    return tuple(dict.fromkeys(part.strip().lower() for part in text.split(",") if part.strip()))


def _bool(query: Mapping[str, str], name: str) -> bool:
    text = query.get(name, "false").lower()
    if text not in ("true", "false"):
        raise _bad(name, "expected true or false")
    return text == "true"


def _grouping(query: Mapping[str, str], default: tuple[str, ...]) -> tuple[str, ...]:
    if "grouping" not in query:
        return default
    result: list[str] = []
    for part in query["grouping"].split(","):
        name = _ALIASES.get(part.strip().lower(), part.strip().lower())
        if not name:
            continue
        if name not in GROUPINGS:
            known = ", ".join(sorted(GROUPINGS))
            raise _bad(
                "grouping", f"{part.strip()} is not a grouping this service offers ({known})"
            )
        if name in result:
            raise _bad("grouping", f"{name} is given twice")
        result.append(name)
    return tuple(result)


def _fixed(query: Mapping[str, str], name: str, allowed: str, default: str) -> str:
    value = query.get(name, default).lower()
    if value != allowed:
        raise _bad(name, f"only {allowed} can be computed from callbacks")
    return value


# ---------------------------------------------------------------------- handlers


def _authorise(request: web.Request, config: ApiConfig, app: str) -> None:
    header = request.headers.get("Authorization")
    presented: str | None = None
    if header is not None:
        match = _TOKEN_HEADER.fullmatch(header.strip())
        if match is None:
            raise ApiError(401, "unauthorized", "Authorization", "expected Token token=...")
        presented = match.group(1)
    else:
        presented = request.query.get("user_token")
    if not presented:
        raise ApiError(401, "unauthorized", "user_token", "a token is required")
    scopes: frozenset[str] | None = None
    candidate = presented.encode()
    for secret, apps in config.tokens:
        if hmac.compare_digest(secret, candidate):
            scopes = apps
    if scopes is None:
        raise ApiError(401, "unauthorized", "user_token", "unknown token")
    if "*" not in scopes and app not in scopes:
        raise ApiError(403, "forbidden", "app_token", "this token may not read this app")


def _format_and_name(segment: str) -> tuple[str, Literal["json", "csv"] | None]:
    for suffix in ("json", "csv"):
        if segment.endswith("." + suffix):
            return segment[: -len(suffix) - 1], suffix
    return segment, None


@dataclass(frozen=True, slots=True)
class _Request:
    app_token: str
    app: str
    resource: Literal["overview", "events"]
    tracker_token: str | None
    format: Literal["json", "csv"]


def _route(request: web.Request, config: ApiConfig) -> _Request:
    info = request.match_info
    tail = info.get("resource") or info.get("tracker_token") or info["app_token"]
    tail, suffix = _format_and_name(tail)
    app_token = info["app_token"] if "resource" in info or "tracker_token" in info else tail
    tracker_token = info.get("tracker_token")
    resource: Literal["overview", "events"] = "overview"
    if "resource" in info:
        if tail == "cohorts":
            raise ApiError(
                400,
                "unsupported",
                "cohorts",
                "cohort KPIs group by install date; callbacks are dated by their activity",
            )
        if tail != "events":
            raise ApiError(404, "not_found", None, "no such resource")
        resource = "events"
    elif tracker_token is not None:
        tracker_token = tail
    accept = request.headers.get("Accept", "")
    fmt: Literal["json", "csv"] = suffix or ("csv" if "text/csv" in accept else "json")
    app = config.apps.get(app_token)
    if app is None:
        _authorise(request, config, app_token)
        raise ApiError(404, "not_found", "app_token", "no such app")
    return _Request(app_token, app, resource, tracker_token, fmt)


async def _handle(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    try:
        route = _route(request, config)
        _authorise(request, config, route.app)
        answer = await _answer(request.app[STORE], config, route, request.query)
    except ApiError as error:
        return error.response()
    except KpiError as error:
        return ApiError(400, "unsupported_kpi", error.field, error.message).response()
    if route.format == "csv":
        # CSV has no place for result_parameters: its warnings go in a header.
        headers = {
            WARNINGS_HEADER: ", ".join(
                f"{w['code']} {w['currency']}={w['revenue_events']}"
                for w in answer.parameters["warnings"]
            )
        }
        if not headers[WARNINGS_HEADER]:
            headers = {}
        return web.Response(text=answer.csv(), content_type="text/csv", headers=headers)
    return web.Response(body=answer.json(), content_type="application/json")


@dataclass(frozen=True, slots=True)
class _Answer:
    parameters: dict[str, Any]
    result_set: dict[str, Any]
    columns: list[str]
    rows: list[list[str]]

    def json(self) -> bytes:
        body = {"result_parameters": self.parameters, "result_set": self.result_set}
        raw = orjson.dumps(body, default=_exact)
        # Exact decimals as JSON numbers, not floats: marked strings are unquoted here.
        return re.sub(rb'"\\u0000decimal:(-?[0-9.]+)"', rb"\1", raw)

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.columns)
        writer.writerows(self.rows)
        return out.getvalue()


def _exact(value: Any) -> Any:
    if isinstance(value, Decimal):
        return _DECIMAL_MARK + _plain(value)
    raise TypeError


def _plain(value: Decimal) -> str:
    return format(value, "f")


async def _answer(
    store: KpiStore, config: ApiConfig, route: _Request, query: Mapping[str, str]
) -> _Answer:
    offset_s = parse_offset(query.get("utc_offset"))
    start, end = _dates(query, offset_s)
    sandbox = _bool(query, "sandbox")
    reattributed = query.get("reattributed", "all").lower()
    if reattributed not in ("all", "true", "false"):
        raise _bad("reattributed", "expected true, false or all")
    attribution_type = _fixed(query, "attribution_type", "all", "all")
    attribution_source = _fixed(query, "attribution_source", "dynamic", "dynamic")
    for unsupported in ("regions", "partner_ids", "cohort_revenue_period", "tracker_filter"):
        if unsupported in query:
            raise _bad(unsupported, "not offered by this service")
    events_resource = route.resource == "events"
    default_grouping = ("events",) if events_resource else ("trackers",)
    grouping = _grouping(query, default_grouping)
    if "hour" in grouping and (end - start).days > 31:
        raise _bad("grouping", "hour grouping covers at most 31 days")
    if not events_resource and "events" in grouping:
        raise _bad("grouping", "events grouping is for the events endpoint")
    if events_resource:
        kpis_text = query.get("kpis")
        names = (
            [check_event_kpi(k.strip().lower(), "kpis") for k in kpis_text.split(",") if k.strip()]
            if kpis_text
            else list(_EVENTS_DEFAULT)
        )
        app_kpis: list[str] = []
    else:
        text = query.get("kpis")
        requested = [k.strip() for k in text.split(",") if k.strip()] if text else None
        if requested is None and "event_kpis" in query:
            requested = []
        app_kpis = check_app_kpis(requested if requested is not None else _OVERVIEW_DEFAULT)
        names = []
    if "event_kpis" in query and not events_resource:
        parse_event_kpis(query["event_kpis"], [])  # refuse bad names before any work
    scope = None
    if route.tracker_token is not None:
        scope = await asyncio.to_thread(resolve_tracker, store, route.app, route.tracker_token)
    events_filter = _list(query, "events") if events_resource else None
    kpi_query = KpiQuery(
        app=route.app,
        start=start,
        end=end,
        utc_offset_s=offset_s,
        sandbox=sandbox,
        countries=_list(query, "countries"),
        os_names=_list(query, "os_names"),
        device_types=_list(query, "device_types"),
        event_tokens=events_filter,
        reattributed=reattributed,  # type: ignore[arg-type]
        tracker=scope,
        grouping=grouping,
    )
    result = await asyncio.to_thread(run_query, store, kpi_query)
    event_kpis: list[EventKpi] = []
    if "event_kpis" in query and not events_resource:
        event_kpis = parse_event_kpis(query["event_kpis"], result.event_tokens)
    currency = config.settings.currency_of(route.app)
    labels = [*app_kpis, *(k.label for k in event_kpis), *names]

    def values(key: tuple[str, ...], sums: Sums) -> list[Value]:
        event_token = key[grouping.index("events")] if "events" in grouping else None
        out: list[Value] = [app_value(name, sums, currency) for name in app_kpis]
        out += [event_value(k, sums, currency) for k in event_kpis]
        for name in names:
            tokens = [event_token] if event_token is not None else result.event_tokens
            total: Value = 0
            if name in ("revenue_per_event", "revenue_per_revenue_event"):
                total = _combined_ratio(name, sums, tokens, currency)
            else:
                for token in tokens:
                    total += event_value(EventKpi(token, name), sums, currency)
            out.append(total)
        return out

    rows = [(key, values(key, sums)) for key, sums in result.groups]
    parameters: dict[str, Any] = {
        "kpis": labels,
        "start_date": start.isoformat(),
        "end_date": end.isoformat(),
        "utc_offset": format_offset(offset_s),
        "sandbox": sandbox,
        "reattributed": reattributed,
        "attribution_type": attribution_type,
        "attribution_source": attribution_source,
    }
    for name in ("countries", "os_names", "device_types"):
        if name in query:
            parameters[name] = list(_list(query, name) or ())
    if events_resource and events_filter is not None:
        parameters["events_filter"] = list(events_filter)
    tracker_groupings = [g for g in grouping if g in TRACKER_GROUPINGS]
    if tracker_groupings:
        parameters["trackers"] = [
            {"token": t.token, "name": t.name, "has_subtrackers": t.has_subtrackers}
            for t in sorted(result.trackers.values(), key=lambda t: (t.names, t.token))
        ]
    if event_kpis or events_resource:
        shown = sorted({k.token for k in event_kpis} | set(result.event_tokens))
        parameters["events"] = [{"name": token, "token": token} for token in shown]
    parameters["grouping"] = list(grouping)
    parameters["warnings"] = _warnings(labels, result, currency)
    result_set: dict[str, Any] = {
        "token": route.app_token,
        "name": config.settings.app_names.get(route.app, route.app),
        "currency": currency,
    }
    if grouping:
        result_set.update(_nest(rows, grouping, result, 0))
    else:
        result_set["kpi_values"] = rows[0][1] if rows else [0 for _ in labels]
    columns, csv_rows = _table(rows, grouping, result, labels)
    return _Answer(parameters, result_set, columns, csv_rows)


def _warnings(labels: Sequence[str], result: QueryResult, currency: str) -> list[dict[str, Any]]:
    """What the figures leave out, when a revenue KPI was asked for (not in the seed's
    answers: Adjust converts currencies itself; callbacks cannot)."""
    if not any("revenue" in label and not label.endswith("revenue_events") for label in labels):
        return []
    return [
        {
            "code": "revenue_not_converted",
            "currency": other,
            "revenue_events": n,
            "message": (
                f"{n} revenue events in {other} are not counted: revenue in a currency other"
                f" than the reporting currency ({currency}) is not converted; send"
                " {reporting_revenue} and {reporting_currency} in the callback URL"
            ),
        }
        for other, n in result.left_out(currency).items()
    ]


def _combined_ratio(name: str, sums: Sums, tokens: Sequence[str], currency: str) -> Decimal:
    revenue = Decimal(0)
    for token in tokens:
        revenue += event_value(EventKpi(token, "revenue"), sums, currency)
    basis = "events" if name == "revenue_per_event" else "revenue_events"
    n = sum(int(event_value(EventKpi(t, basis), sums, currency)) for t in tokens)
    return Decimal(0) if n == 0 else (revenue / n).quantize(Decimal("0.0001"))


def _entry(grouping: str, value: str, result: QueryResult) -> dict[str, Any]:
    if grouping in TRACKER_GROUPINGS:
        if grouping == "trackers":
            return {"token": value}
        return {"token": value, "name": result.trackers[value].name}
    if grouping == "events":
        return {"token": value}
    if grouping in _ID_FIELDS:
        return {_ID_FIELDS[grouping]: value}
    return {"date": value}


def _nest(
    rows: list[tuple[tuple[str, ...], list[Value]]],
    grouping: tuple[str, ...],
    result: QueryResult,
    depth: int,
) -> dict[str, Any]:
    if depth == len(grouping):
        return {"kpi_values": rows[0][1]}
    buckets: dict[str, list[tuple[tuple[str, ...], list[Value]]]] = {}
    for row in rows:
        buckets.setdefault(row[0][depth], []).append(row)
    name = grouping[depth]
    return {
        _LIST_KEYS[name]: [
            {**_entry(name, value, result), **_nest(sub, grouping, result, depth + 1)}
            for value, sub in buckets.items()
        ]
    }


def _table(
    rows: list[tuple[tuple[str, ...], list[Value]]],
    grouping: tuple[str, ...],
    result: QueryResult,
    labels: list[str],
) -> tuple[list[str], list[list[str]]]:
    columns: list[str] = []
    first_tracker = True
    for name in grouping:
        if name in TRACKER_GROUPINGS:
            level = "tracker" if name == "trackers" else name[:-1]
            columns += ["tracker_token" if first_tracker else f"{level}_token"]
            columns += ["tracker_name" if name == "trackers" else level]
            first_tracker = False
        elif name == "events":
            columns += ["event_token", "event_name"]
        elif name in _ID_FIELDS:
            columns.append(_ID_FIELDS[name])
        else:
            columns.append("date")
    table: list[list[str]] = []
    for key, values in rows:
        line: list[str] = []
        for name, value in zip(grouping, key, strict=True):
            if name in TRACKER_GROUPINGS:
                line += [value, result.trackers[value].name]
            elif name == "events":
                line += [value, value]
            else:
                line.append(value)
        line += [_plain(v) if isinstance(v, Decimal) else str(v) for v in values]
        table.append(line)
    if not grouping and not rows:
        table.append(["0" for _ in labels])
    return [*columns, *labels], table


# ---------------------------------------------------------------------- the app


def create_kpi_app(
    settings: Settings,
    *,
    app_tokens: Mapping[str, str] | None = None,
    store: KpiStore | None = None,
) -> web.Application:
    """The KPI API. Opens the store (``settings.kpi.database_url``) at start-up and
    closes it at clean-up, unless ``store`` is given (then the caller owns it)."""
    app = web.Application()
    app[CONFIG] = api_config(settings, app_tokens)

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        if store is not None:
            app[STORE] = store
            yield
            return
        opened = await asyncio.to_thread(KpiStore.open, settings.kpi.database_url)
        app[STORE] = opened
        yield
        await asyncio.to_thread(opened.close)

    app.cleanup_ctx.append(store_ctx)
    for path in (
        "/kpis/v1/{app_token}",
        "/kpis/v1/{app_token}/{resource}",
        "/kpis/v1/{app_token}/trackers/{tracker_token}",
        "/kpis/v1/{app_token}/trackers/{tracker_token}/{resource}",
    ):
        app.router.add_get(path, _handle)
    return app


async def serve_kpi_api(settings: Settings, *, app_tokens: Mapping[str, str] | None = None) -> None:
    """Serve the KPI API on ``settings.kpi.host:port`` until cancelled."""
    runner = web.AppRunner(create_kpi_app(settings, app_tokens=app_tokens), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.kpi.host, settings.kpi.port).start()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
