"""Strict local fakes of Adjust's two pull APIs, computing their numbers from activities.

One aiohttp server answers both:

- the **Report Service** under ``/reports-service``: ``/events`` (event slugs),
  ``/report`` (JSON, numbers as strings, paged with an explicit next link) and
  ``/csv_report``; ``Authorization: Bearer TOKEN``;
- the **KPI Service v1** under ``/kpis/v1``: the overview
  (``/kpis/v1/APP.json|.csv``), ``/trackers/TRACKER`` and ``/events``;
  ``Authorization: Token token=TOKEN`` (or ``user_token``).

Both refuse a missing or wrong token (401), an unknown parameter, a bad enum
value or a malformed date with a 400 naming it, and (``require_explicit``, on by
default) a request that leaves a binding setting to the API's default. They
apply the asked UTC offset, date range, sandbox, attribution type and
attribution status to the activities the test gives them (``activities`` may be
changed between requests: that is how a test revises an earlier day). A test can
script the next answers (429 with ``Retry-After``, 503, 504, a redirect to
another host, a next-page link to another host) and set a real rate limit.
"""

from __future__ import annotations

import csv
import io
import re
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

import orjson
from aiohttp import web

from tests.support import serve_locally

ACTIVITY_KPIS = {
    "installs": "install",
    "reattributions": "reattribution",
    "reinstalls": "reinstall",
    "rejected_installs": "rejected_install",
    "rejected_reattributions": "rejected_reattribution",
    "sessions": "session",
}
_OFFSET = re.compile(r"^([+-]?)(\d\d):(\d\d)$")
_DATE = re.compile(r"^\d{4}-\d\d-\d\d$")


@dataclass(frozen=True)
class Activity:
    """One activity as Adjust counts it."""

    kind: str  # install, reattribution, reinstall, rejected_install, ..., session, event
    at: datetime  # UTC
    network: str = "Organic"
    country: str = "de"
    event_token: str = ""
    revenue: Decimal = Decimal(0)  # in the reporting currency
    environment: str = "production"
    attribution: str = "installed"  # or "reattributed" (the user's status)
    attribution_type: str = "click"  # click, impression, engaged_ad
    campaign: str = ""


@dataclass
class Received:
    path: str
    params: dict[str, str]
    authorization: str | None


class BadRequest(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _offset_seconds(text: str) -> int:
    match = _OFFSET.match(text)
    if not match or int(match.group(3)) % 15 or int(match.group(2)) > 14:
        raise BadRequest(f"utc_offset {text!r} is not [+-]HH:MM")
    seconds = int(match.group(2)) * 3600 + int(match.group(3)) * 60
    return -seconds if match.group(1) == "-" else seconds


def _date(text: str, name: str) -> date:
    if not _DATE.match(text):
        raise BadRequest(f"{name} must be YYYY-MM-DD")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"{name} is not a date") from None


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


@dataclass
class _Filters:
    start: date
    end: date
    offset_s: int
    sandbox: bool
    types: frozenset[str]
    reattributed: str  # all, true, false

    def day_of(self, activity: Activity) -> date | None:
        local = activity.at.astimezone(UTC) + timedelta(seconds=self.offset_s)
        day = local.date()
        return day if self.start <= day <= self.end else None

    def keep(self, activity: Activity) -> bool:
        if (activity.environment == "sandbox") != self.sandbox:
            return False
        if activity.attribution_type not in self.types:
            return False
        if self.reattributed == "true" and activity.attribution != "reattributed":
            return False
        return not (self.reattributed == "false" and activity.attribution != "installed")


@dataclass
class FakeAdjust:
    token: str = "adjust-api-token-for-tests"
    app_token: str = "abc123def456"
    app_name: str = "Demo"
    currency: str = "USD"
    # Event token -> event name (its Report Service slug is the name, slugified).
    events: dict[str, str] = field(default_factory=dict)
    activities: list[Activity] = field(default_factory=list)
    page_size: int = 1000
    require_explicit: bool = True
    # A real limit: more requests than this within one second are answered 429.
    max_per_s: int | None = None
    # Where the next-page link points (None: this server).
    next_host: str | None = None
    received: list[Received] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)
    _script: deque[tuple[int, dict[str, str]]] = field(default_factory=deque)
    _recent: deque[float] = field(default_factory=deque)
    _runner: web.AppRunner | None = None
    port: int = 0

    # ------------------------------------------------------------ test controls

    def fail_next(self, status: int, **headers: str) -> None:
        """Answer the next request with ``status`` (and headers) instead of the numbers."""
        self._script.append((status, headers))

    def redirect_next(self, location: str) -> None:
        self._script.append((302, {"Location": location}))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def report_service_url(self) -> str:
        return f"{self.url}/reports-service"

    async def start(self) -> FakeAdjust:
        app = web.Application()
        app.router.add_get("/reports-service/events", self._rs_events)
        app.router.add_get("/reports-service/report", self._rs_report)
        app.router.add_get("/reports-service/csv_report", self._rs_csv)
        app.router.add_get(
            r"/kpis/v1/{app:[A-Za-z0-9]+}/trackers/{tracker:[A-Za-z0-9]+}/events{ext:(\.json|\.csv)?}",
            self._kpi_events,
        )
        app.router.add_get(
            r"/kpis/v1/{app:[A-Za-z0-9]+}/events{ext:(\.json|\.csv)?}", self._kpi_events
        )
        app.router.add_get(
            r"/kpis/v1/{app:[A-Za-z0-9]+}/trackers/{tracker:[A-Za-z0-9]+}{ext:(\.json|\.csv)?}",
            self._kpi_overview,
        )
        app.router.add_get(r"/kpis/v1/{app:[A-Za-z0-9]+}{ext:(\.json|\.csv)?}", self._kpi_overview)
        self._runner, self.port = await serve_locally(app)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------ shared checks

    def _gate(self, request: web.Request, scheme: str) -> web.Response | None:
        params = dict(request.rel_url.query)
        auth = request.headers.get("Authorization")
        self.received.append(Received(request.path, params, auth))
        now = time.monotonic()
        if self.max_per_s is not None:
            while self._recent and now - self._recent[0] > 1.0:
                self._recent.popleft()
            self._recent.append(now)
            if len(self._recent) > self.max_per_s:
                return self._answer(
                    web.json_response(
                        {"error": "Too many requests"}, status=429, headers={"Retry-After": "1"}
                    )
                )
        if self._script:
            status, headers = self._script.popleft()
            body = {"error": f"scripted {status}"} if status >= 400 else {}
            return self._answer(web.json_response(body, status=status, headers=headers))
        expected = f"Bearer {self.token}" if scheme == "bearer" else f"Token token={self.token}"
        if auth != expected and not (scheme == "token" and params.get("user_token") == self.token):
            return self._answer(web.json_response({"error": "Unauthorized"}, status=401))
        return None

    def _answer(self, response: web.Response) -> web.Response:
        self.answered.append(response.status)
        return response

    def _bad(self, message: str) -> web.Response:
        return self._answer(
            web.json_response({"error": "Bad Request", "detail": message}, status=400)
        )

    @staticmethod
    def _only(params: dict[str, str], known: set[str], required: set[str]) -> None:
        unknown = sorted(set(params) - known)
        if unknown:
            raise BadRequest(f"unknown parameter(s): {', '.join(unknown)}")
        missing = sorted(required - set(params))
        if missing:
            raise BadRequest(f"missing parameter(s): {', '.join(missing)}")

    @staticmethod
    def _enum(params: dict[str, str], name: str, allowed: set[str]) -> str | None:
        value = params.get(name)
        if value is not None and value not in allowed:
            raise BadRequest(f"{name} must be one of {', '.join(sorted(allowed))}")
        return value

    # ------------------------------------------------------------ Report Service

    _RS_KNOWN: ClassVar[set[str]] = {
        "app_token__in",
        "date_period",
        "dimensions",
        "metrics",
        "utc_offset",
        "attribution_type",
        "attribution_types",
        "attribution_source",
        "reattributed",
        "ad_revenue_sources",
        "sandbox",
        "currency",
        "cohort_maturity",
        "country_code__in",
        "network__in",
        "page",
    }
    _RS_EXPLICIT: ClassVar[set[str]] = {
        "utc_offset",
        "attribution_types",
        "attribution_source",
        "reattributed",
        "currency",
        "sandbox",
    }
    _RS_DIMENSIONS: ClassVar[dict[str, str]] = {
        "day": "day",
        "network": "network",
        "country_code": "country",
        "campaign": "campaign",
    }

    def _slugs(self) -> dict[str, str]:
        return {_slug(name): token for token, name in self.events.items()}

    async def _rs_events(self, request: web.Request) -> web.Response:
        refused = self._gate(request, "bearer")
        if refused is not None:
            return refused
        params = dict(request.rel_url.query)
        try:
            self._only(params, {"app_token__in", "events__contains", "tokens_mapping"}, set())
        except BadRequest as exc:
            return self._bad(exc.message)
        apps = params.get("app_token__in", self.app_token).split(",")
        if self.app_token not in apps:
            return self._answer(web.json_response([]))
        body = [
            {
                "id": _slug(name),
                "name": name,
                "short_name": name,
                "section": "events",
                "formatting": "number",
                "app_token": [self.app_token],
                "tokens": [token],
                "is_skad_event": False,
            }
            for token, name in sorted(self.events.items())
        ]
        return self._answer(web.json_response(body))

    def _rs_rows(self, params: dict[str, str]) -> tuple[list[str], list[str], list[dict[str, str]]]:
        required = {"dimensions", "metrics", "date_period"}
        if self.require_explicit:
            required |= self._RS_EXPLICIT
        self._only(params, self._RS_KNOWN, required)
        if params.get("app_token__in", self.app_token) != self.app_token:
            raise BadRequest("app_token__in names an app this user cannot see")
        period = params["date_period"].split(":")
        if len(period) != 2:
            raise BadRequest("date_period must be START:END")
        start, end = _date(period[0], "date_period"), _date(period[1], "date_period")
        if end < start:
            raise BadRequest("date_period ends before it starts")
        dimensions = params["dimensions"].split(",")
        for dimension in dimensions:
            if dimension not in self._RS_DIMENSIONS:
                raise BadRequest(f"dimension {dimension!r} is not supported")
        metrics = params["metrics"].split(",")
        slugs = self._slugs()
        for metric in metrics:
            base, _, suffix = metric.rpartition("_")
            if metric not in ACTIVITY_KPIS and not (
                suffix in ("events", "revenue") and base in slugs
            ):
                raise BadRequest(f"metric {metric!r} is not supported")
        types = set((params.get("attribution_types") or "click,impression").split(","))
        if not types <= {"click", "impression", "engaged_ad"}:
            raise BadRequest("attribution_types must be click, impression or engaged_ad")
        self._enum(params, "attribution_source", {"first", "dynamic"})
        reattributed = self._enum(params, "reattributed", {"all", "true", "false"}) or "all"
        sandbox = self._enum(params, "sandbox", {"true", "false"}) == "true"
        currency = params.get("currency", self.currency)
        if not re.match(r"^[A-Z]{3}$", currency):
            raise BadRequest("currency must be an ISO 4217 code")
        if currency != self.currency:
            raise BadRequest(f"this fake reports in {self.currency} only")
        filters = _Filters(
            start,
            end,
            _offset_seconds(params.get("utc_offset", "+00:00")),
            sandbox,
            frozenset(types),
            reattributed,
        )
        groups: dict[tuple[str, ...], dict[str, Decimal]] = {}
        for activity in self.activities:
            day = filters.day_of(activity)
            if day is None or not filters.keep(activity):
                continue
            values = {
                "day": day.isoformat(),
                "network": activity.network,
                "country": activity.country.upper(),
                "campaign": activity.campaign,
            }
            key = tuple(values[self._RS_DIMENSIONS[d]] for d in dimensions)
            sums = groups.setdefault(key, {m: Decimal(0) for m in metrics})
            for metric in metrics:
                if ACTIVITY_KPIS.get(metric) == activity.kind:
                    sums[metric] += 1
                base, _, suffix = metric.rpartition("_")
                if activity.kind == "event" and slugs.get(base) == activity.event_token:
                    sums[metric] += 1 if suffix == "events" else activity.revenue
        rows = [
            {**dict(zip(dimensions, key, strict=True)), **{m: str(v) for m, v in sums.items()}}
            for key, sums in sorted(groups.items())
        ]
        return dimensions, metrics, rows

    async def _rs_report(self, request: web.Request) -> web.Response:
        refused = self._gate(request, "bearer")
        if refused is not None:
            return refused
        params = dict(request.rel_url.query)
        try:
            _, metrics, rows = self._rs_rows(params)
            page = int(params.get("page", "1"))
        except (BadRequest, ValueError) as exc:
            return self._bad(
                exc.message if isinstance(exc, BadRequest) else "page must be a number"
            )
        if not rows:
            return self._answer(web.Response(status=204))
        chunk = rows[(page - 1) * self.page_size : page * self.page_size]
        pagination: dict[str, Any] = {"page": page, "page_size": self.page_size, "next": None}
        if page * self.page_size < len(rows):
            host = self.next_host or f"127.0.0.1:{self.port}"
            query = request.rel_url.update_query(page=str(page + 1)).query_string
            pagination["next"] = f"http://{host}{request.path}?{query}"
        totals = {m: str(sum((Decimal(r[m]) for r in rows), Decimal(0))) for m in metrics}
        body = {"rows": chunk, "totals": totals, "warnings": [], "pagination": pagination}
        return self._answer(web.Response(body=orjson.dumps(body), content_type="application/json"))

    async def _rs_csv(self, request: web.Request) -> web.Response:
        refused = self._gate(request, "bearer")
        if refused is not None:
            return refused
        params = dict(request.rel_url.query)
        if "page" in params:
            return self._bad("unknown parameter(s): page")
        try:
            dimensions, metrics, rows = self._rs_rows(params)
        except BadRequest as exc:
            return self._bad(exc.message)
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=[*dimensions, *metrics])
        writer.writeheader()
        writer.writerows(rows)
        return self._answer(web.Response(text=out.getvalue(), content_type="text/csv"))

    # ------------------------------------------------------------ KPI Service v1

    _KPI_COMMON: ClassVar[set[str]] = {
        "start_date",
        "end_date",
        "utc_offset",
        "kpis",
        "sandbox",
        "attribution_type",
        "attribution_source",
        "countries",
        "os_names",
        "device_types",
        "grouping",
        "user_token",
        "human_readable_kpis",
        "tracker_filter",
    }
    _KPI_OVERVIEW: ClassVar[set[str]] = _KPI_COMMON | {
        "event_kpis",
        "reattributed",
        "impression_based",
        "regions",
        "cohort_revenue_period",
    }
    _KPI_EVENTS: ClassVar[set[str]] = _KPI_COMMON | {"events", "partner_ids"}
    _KPI_GROUPINGS: ClassVar[dict[str, str]] = {
        "day": "dates",
        "days": "dates",
        "networks": "networks",
        "campaigns": "campaigns",
        "countries": "countries",
        "trackers": "networks",
    }
    _APP_KPIS: ClassVar[set[str]] = {
        "clicks",
        "impressions",
        "installs",
        "uninstalls",
        "reinstalls",
        "reattributions",
        "reattribution_reinstalls",
        "deattributions",
        "sessions",
        "revenue_events",
        "revenue",
        "daus",
        "waus",
        "maus",
        "rejected_installs",
        "rejected_reattributions",
    }

    def _kpi_filters(self, params: dict[str, str], known: set[str], explicit: set[str]) -> _Filters:
        required = explicit if self.require_explicit else set()
        self._only(params, known, required)
        start = _date(
            params.get("start_date", date.today().replace(day=1).isoformat()), "start_date"
        )
        end = _date(params.get("end_date", date.today().isoformat()), "end_date")
        if end < start:
            raise BadRequest("end_date is before start_date")
        kind = self._enum(params, "attribution_type", {"click", "impression", "all"}) or "click"
        types = {"click": {"click"}, "impression": {"impression"}, "all": {"click", "impression"}}[
            kind
        ]
        self._enum(params, "attribution_source", {"first", "dynamic"})
        reattributed = self._enum(params, "reattributed", {"all", "true", "false"}) or "all"
        sandbox = self._enum(params, "sandbox", {"true", "false"}) == "true"
        return _Filters(
            start,
            end,
            _offset_seconds(params.get("utc_offset", "00:00")),
            sandbox,
            frozenset(types),
            reattributed,
        )

    def _kpi_grouping(self, params: dict[str, str]) -> list[str]:
        grouping = [g for g in params.get("grouping", "").split(",") if g]
        for item in grouping:
            if item not in self._KPI_GROUPINGS:
                raise BadRequest(f"grouping {item!r} is not supported")
        return grouping

    def _expand_event_kpis(self, text: str) -> list[str]:
        expanded: list[str] = []
        for part in [p for p in text.split(",") if p]:
            prefix, _, metrics = part.partition("_")
            names = metrics.split("|")
            for name in names:
                if name not in ("events", "revenue", "revenue_events", "first_events"):
                    raise BadRequest(f"event kpi {part!r} is not supported")
            tokens = sorted(self.events) if prefix == "all" else [prefix]
            for token in tokens:
                if token not in self.events:
                    raise BadRequest(f"unknown event token {token!r}")
                expanded += [f"{token}_{name}" for name in names]
        return expanded

    def _kpi_value(self, name: str, activity: Activity, events_token: str | None) -> Decimal:
        if events_token is not None:  # the events endpoint: plain event KPIs
            if activity.kind != "event" or activity.event_token != events_token:
                return Decimal(0)
            return Decimal(1) if name == "events" else activity.revenue
        if name in ACTIVITY_KPIS:
            return Decimal(1) if activity.kind == ACTIVITY_KPIS[name] else Decimal(0)
        token, _, metric = name.rpartition("_")
        if activity.kind == "event" and activity.event_token == token:
            return Decimal(1) if metric == "events" else activity.revenue
        return Decimal(0)

    def _network_token(self, network: str) -> str:
        return _slug(network)[:6] or "organ1"

    async def _kpi_overview(self, request: web.Request) -> web.Response:
        return await self._kpi(request, events_endpoint=False)

    async def _kpi_events(self, request: web.Request) -> web.Response:
        return await self._kpi(request, events_endpoint=True)

    async def _kpi(self, request: web.Request, *, events_endpoint: bool) -> web.Response:
        refused = self._gate(request, "token")
        if refused is not None:
            return refused
        params = dict(request.rel_url.query)
        if request.match_info["app"] != self.app_token:
            return self._answer(web.json_response({"error": "App not found"}, status=404))
        explicit = {
            "start_date",
            "end_date",
            "utc_offset",
            "attribution_type",
            "attribution_source",
            "sandbox",
            "kpis",
        }
        try:
            if events_endpoint:
                filters = self._kpi_filters(params, self._KPI_EVENTS, explicit)
                kpis = params.get("kpis", "events").split(",")
                for name in kpis:
                    if name not in ("events", "revenue", "revenue_events", "first_events"):
                        raise BadRequest(f"event kpi {name!r} is not supported")
                wanted = [t for t in params.get("events", ",".join(self.events)).split(",") if t]
                for token in wanted:
                    if token not in self.events:
                        raise BadRequest(f"unknown event token {token!r}")
                grouping = self._kpi_grouping(
                    {
                        "grouping": params.get("grouping", "")
                        .replace(",events", "")
                        .replace("events", "")
                    }
                )
            else:
                filters = self._kpi_filters(params, self._KPI_OVERVIEW, explicit | {"reattributed"})
                kpis = [k for k in params.get("kpis", "installs").split(",") if k]
                for name in kpis:
                    if name not in self._APP_KPIS:
                        raise BadRequest(f"kpi {name!r} is not supported")
                kpis += self._expand_event_kpis(params.get("event_kpis", ""))
                wanted = []
                grouping = self._kpi_grouping(params)
        except BadRequest as exc:
            return self._bad(exc.message)
        tracker = request.match_info.get("tracker")
        kept = [
            (day, a)
            for a in self.activities
            if (day := filters.day_of(a)) is not None
            and filters.keep(a)
            and (tracker is None or self._network_token(a.network) == tracker)
        ]
        levels = [self._KPI_GROUPINGS[g] for g in grouping]

        def label(level: str, day: date, activity: Activity) -> str:
            if level == "dates":
                return day.isoformat()
            if level == "networks":
                return activity.network
            if level == "campaigns":
                return activity.campaign
            return activity.country

        def values(items: list[tuple[date, Activity]], token: str | None) -> list[Any]:
            out: list[Any] = []
            for name in kpis:
                total = sum((self._kpi_value(name, a, token) for _, a in items), Decimal(0))
                out.append(
                    int(total)
                    if total == total.to_integral_value() and "revenue" not in name
                    else float(total)
                )
            return out

        def nest(items: list[tuple[date, Activity]], depth: int) -> dict[str, Any]:
            if depth == len(levels):
                if events_endpoint:
                    return {
                        "events": [{"token": t, "kpi_values": values(items, t)} for t in wanted]
                    }
                return {"kpi_values": values(items, None)}
            level = levels[depth]
            buckets: dict[str, list[tuple[date, Activity]]] = {}
            for day, activity in items:
                buckets.setdefault(label(level, day, activity), []).append((day, activity))
            entries = []
            for name, members in sorted(buckets.items()):
                entry: dict[str, Any]
                if level == "dates":
                    entry = {"date": name}
                elif level == "countries":
                    entry = {"country": name}
                else:
                    entry = {"token": self._network_token(name)}
                entries.append({**entry, **nest(members, depth + 1)})
            return {level: entries}

        networks = sorted({a.network for _, a in kept})
        parameters = {
            "kpis": kpis,
            "start_date": filters.start.isoformat(),
            "end_date": filters.end.isoformat(),
            "sandbox": filters.sandbox,
            "utc_offset": params.get("utc_offset", "00:00"),
            "attribution_type": params.get("attribution_type", "click"),
            "attribution_source": params.get("attribution_source", "dynamic"),
            "reattributed": params.get("reattributed", "all"),
            "grouping": grouping,
            "networks": [
                {"token": self._network_token(n), "name": n, "has_subtrackers": True}
                for n in networks
            ],
            "events": [{"token": t, "name": n} for t, n in sorted(self.events.items())],
        }
        if request.match_info.get("ext") == ".csv" or request.headers.get("Accept") == "text/csv":
            if events_endpoint:
                return self._bad("this fake answers the events endpoint in JSON only")
            return self._kpi_csv(kept, grouping, kpis, label, values)
        result = {
            "token": self.app_token,
            "name": self.app_name,
            "currency": self.currency,
            **nest(kept, 0),
        }
        body = {"result_parameters": parameters, "result_set": result}
        return self._answer(web.Response(body=orjson.dumps(body), content_type="application/json"))

    def _kpi_csv(
        self,
        kept: list[tuple[date, Activity]],
        grouping: list[str],
        kpis: list[str],
        label: Any,
        values: Any,
    ) -> web.Response:
        columns = {
            "dates": "date",
            "networks": "network",
            "campaigns": "campaign",
            "countries": "country",
        }
        levels = [self._KPI_GROUPINGS[g] for g in grouping]
        rows: dict[tuple[str, ...], list[tuple[date, Activity]]] = {}
        for day, activity in kept:
            rows.setdefault(tuple(label(level, day, activity) for level in levels), []).append(
                (day, activity)
            )
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow([*(columns[level] for level in levels), *kpis])
        for key, members in sorted(rows.items()):
            writer.writerow([*key, *values(members, None)])
        return self._answer(web.Response(text=out.getvalue(), content_type="text/csv"))
