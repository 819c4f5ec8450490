"""Scheduled reconciliation: each bound app's recent complete days, again and again.

A day is checked once Adjust's retry window has passed (24 h after the day's
local end), and then on every cycle while it stays within the ``lookback``
(default 3 days, at most 30), because Adjust revises recent days. Each check is
stored with its history (:mod:`postback_hub.kpi.reconciliations`), published as
gauges (overall lines only: ours, theirs, ratio and gap per app, day and KPI, so
the series are bounded by apps x lookback x KPIs; days that leave the lookback
are removed) and every gap beyond tolerance logs one warning line.

Each cycle also publishes the last activity per app, kind and event token (at
most :data:`MAX_EVENT_SERIES` event tokens per app) and logs a warning for an
app that sent installs in the last 30 days but none for ``silence_s``.

:func:`watch` is what ``postback-hub reconcile --watch`` runs; ``run`` can start
it beside the other processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from postback_hub.adjust.pull import PullClient
from postback_hub.adjust.pull_parse import offset_seconds
from postback_hub.adjust.reconcile import RETRY_WINDOW, Tolerance
from postback_hub.adjust.reconcile_run import (
    ReconcileError,
    Report,
    binding_and_account,
    bound_apps,
    reconcile,
)
from postback_hub.kpi.reconciliations import LastActivity, last_activity
from postback_hub.kpi.store import KpiStore
from postback_hub.service.fields import KNOWN_ACTIVITY_KINDS
from postback_hub.service.settings import Settings

log = logging.getLogger("postback_hub.reconcile")

MAX_LOOKBACK_DAYS = 30
MAX_EVENT_SERIES = 100
_RECENT_S = 30 * 86_400


@dataclass(frozen=True, slots=True)
class WatchOptions:
    tolerance: Tolerance = field(default_factory=Tolerance)
    lookback_days: int = 3
    interval_s: float = 3600.0
    silence_s: float = 6 * 3600.0
    retry_window: timedelta = RETRY_WINDOW

    def __post_init__(self) -> None:
        if not 1 <= self.lookback_days <= MAX_LOOKBACK_DAYS:
            raise ValueError(f"the lookback is 1 to {MAX_LOOKBACK_DAYS} days")


def due_days(
    now: datetime, utc_offset_s: int, lookback_days: int, retry_window: timedelta = RETRY_WINDOW
) -> list[date]:
    """The ``lookback_days`` most recent local days whose retry window has passed."""
    local_now = now.astimezone(UTC) + timedelta(seconds=utc_offset_s)
    # A day is complete once now >= its local end + the window, i.e. local_now - window
    # has reached the next day.
    last = (local_now - retry_window).date() - timedelta(days=1)
    return [last - timedelta(days=n) for n in reversed(range(lookback_days))]


class ReconcileMetrics:
    """The gauges of reconciliation and of the last activity, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["app", "day", "kpi"]
        self.ours = Gauge(
            "postback_hub_reconcile_ours",
            "Our count of a KPI for a local day (overall).",
            labels,
            registry=self.registry,
        )
        self.theirs = Gauge(
            "postback_hub_reconcile_adjust",
            "Adjust's count of a KPI for a local day (overall).",
            labels,
            registry=self.registry,
        )
        self.ratio = Gauge(
            "postback_hub_reconcile_ratio",
            "Ours divided by Adjust's (absent when Adjust counts 0).",
            labels,
            registry=self.registry,
        )
        self.gap = Gauge(
            "postback_hub_reconcile_gap",
            "1 when the difference is beyond tolerance, else 0.",
            labels,
            registry=self.registry,
        )
        self.runs = Counter(
            "postback_hub_reconcile_runs",
            "Reconciliation runs per app and outcome (ok, failed).",
            ["app", "outcome"],
            registry=self.registry,
        )
        self.last_success = Gauge(
            "postback_hub_reconcile_last_success_timestamp_seconds",
            "When the app was last reconciled.",
            ["app"],
            registry=self.registry,
        )
        self.last_callback = Gauge(
            "postback_hub_last_callback_timestamp_seconds",
            "Start of the newest quarter-hour with a production activity (last 30 days).",
            ["app", "kind", "event_token"],
            registry=self.registry,
        )
        self._published: dict[str, set[tuple[str, str, str]]] = {}
        self._callbacks: set[tuple[str, str, str]] = set()

    def publish(self, report: Report) -> None:
        """The report's overall lines replace the app's earlier series."""
        current: set[tuple[str, str, str]] = set()
        for line in report.lines:
            if line.scope != "all":
                continue
            key = (report.app, line.day.isoformat(), line.kpi)
            current.add(key)
            self.ours.labels(*key).set(float(line.ours))
            self.theirs.labels(*key).set(float(line.theirs))
            self.gap.labels(*key).set(1 if line.gap else 0)
            if line.ratio is None:
                with contextlib.suppress(KeyError):
                    self.ratio.remove(*key)
            else:
                self.ratio.labels(*key).set(float(line.ratio))
        for key in self._published.get(report.app, set()) - current:
            for gauge in (self.ours, self.theirs, self.ratio, self.gap):
                with contextlib.suppress(KeyError):
                    gauge.remove(*key)
        self._published[report.app] = current
        self.last_success.labels(report.app).set(report.checked_at.timestamp())

    def publish_last(self, activities: list[LastActivity]) -> None:
        current: set[tuple[str, str, str]] = set()
        events: dict[str, int] = {}
        for item in activities:
            kind = item.activity_kind if item.activity_kind in KNOWN_ACTIVITY_KINDS else "other"
            if item.event_token:
                events[item.app] = events.get(item.app, 0) + 1
                if events[item.app] > MAX_EVENT_SERIES:
                    continue
            key = (item.app, kind, item.event_token)
            current.add(key)
            self.last_callback.labels(*key).set(item.bucket)
        for key in self._callbacks - current:
            with contextlib.suppress(KeyError):
                self.last_callback.remove(*key)
        self._callbacks = current

    def render(self) -> bytes:
        return generate_latest(self.registry)


def silent_apps(
    activities: list[LastActivity], now_s: float, silence_s: float, apps: list[str]
) -> list[tuple[str, float]]:
    """Apps among ``apps`` with installs in the window but none for ``silence_s``: (app,
    seconds since the last install's quarter-hour)."""
    newest: dict[str, int] = {}
    for item in activities:
        if item.activity_kind == "install" and item.app in apps:
            newest[item.app] = max(newest.get(item.app, 0), item.bucket)
    return sorted(
        (app, now_s - bucket) for app, bucket in newest.items() if now_s - bucket > silence_s
    )


async def run_cycle(
    settings: Settings,
    options: WatchOptions,
    *,
    client: PullClient,
    store: KpiStore,
    metrics: ReconcileMetrics,
    now: datetime | None = None,
) -> list[Report]:
    """One pass over every bound app; a failing app is logged and the others go on."""
    now = now or datetime.now(UTC)
    reports: list[Report] = []
    apps = bound_apps(settings)
    for app in apps:
        try:
            binding, _, _ = binding_and_account(settings, app)
            days = due_days(
                now, offset_seconds(binding.utc_offset), options.lookback_days, options.retry_window
            )
            report = await reconcile(
                settings,
                app,
                days[0],
                days[-1],
                client=client,
                store=store,
                tolerance=options.tolerance,
                now=now,
            )
        except ReconcileError as exc:
            metrics.runs.labels(app, "failed").inc()
            log.warning("reconciliation failed", extra={"app": app, "error": str(exc)})
            continue
        metrics.runs.labels(app, "ok").inc()
        metrics.publish(report)
        for line in report.gaps:
            if line.scope == "all":
                log.warning(
                    "reconciliation gap beyond tolerance",
                    extra={
                        "app": app,
                        "day": line.day.isoformat(),
                        "kpi": line.kpi,
                        "ours": str(line.ours),
                        "adjust": str(line.theirs),
                        "causes": [cause.code for cause in line.causes],
                    },
                )
        reports.append(report)
    since = int(now.timestamp()) - _RECENT_S
    activities = await asyncio.to_thread(last_activity, store, since)
    metrics.publish_last(activities)
    for app, quiet_s in silent_apps(activities, now.timestamp(), options.silence_s, apps):
        log.warning(
            "no install callback for a while",
            extra={"app": app, "silent_h": round(quiet_s / 3600, 1)},
        )
    return reports


async def watch(
    settings: Settings,
    options: WatchOptions,
    *,
    client: PullClient,
    store: KpiStore,
    metrics: ReconcileMetrics,
    stop: asyncio.Event,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """Cycles every ``interval_s`` until ``stop`` is set."""
    while not stop.is_set():
        started = time.monotonic()
        await run_cycle(settings, options, client=client, store=store, metrics=metrics, now=clock())
        remaining = options.interval_s - (time.monotonic() - started)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(remaining, 0.0))
