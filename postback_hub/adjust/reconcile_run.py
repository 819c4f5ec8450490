"""Reconciliation's I/O: our side from the store, Adjust's from the pull client, the result.

:func:`reconcile` answers "how do our counts of APP for these local days
compare with Adjust's?" as a :class:`Report`; the comparison itself is the pure
:func:`postback_hub.adjust.reconcile.compare`. Our side is read through the
store's one read API (:func:`postback_hub.kpi.query.run_query`) under the
binding's UTC offset and attribution status; production only (sandbox counts
are evidence, not figures).

Which KPIs: installs, reattributions, reinstalls, rejected installs and
reattributions, and events and revenue per event token, always; sessions
only when the store holds sessions of that app in the range (the account's
callbacks include them). Revenue is compared in the binding's currency:
revenue our callbacks report in another currency is not converted, so it is
left out of our side.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal

from postback_hub.adjust.pull import PullClient, PullError, binding_of
from postback_hub.adjust.pull_parse import ACTIVITY_KPIS, Query, Table
from postback_hub.adjust.reconcile import (
    CountKey,
    Evidence,
    Line,
    Tolerance,
    compare,
    setting_differences,
    table_counts,
)
from postback_hub.kpi import reconciliations
from postback_hub.kpi.query import KpiQuery, QueryResult, run_query
from postback_hub.kpi.rejections import counts_by_day
from postback_hub.kpi.store import KpiStore
from postback_hub.service.adjust_settings import AdjustAccount, AppBinding
from postback_hub.service.settings import Settings

_KIND_KPI = {kind: kpi for kpi, kind in ACTIVITY_KPIS.items()}


class ReconcileError(Exception):
    """A reconciliation that could not be made (no binding, Adjust unreachable...)."""


@dataclass(frozen=True, slots=True)
class Report:
    app: str
    start: date
    end: date
    lines: list[Line]
    checked_at: datetime
    notes: tuple[str, ...] = field(default=())

    @property
    def gaps(self) -> list[Line]:
        return [line for line in self.lines if line.gap]


def bound_apps(settings: Settings) -> list[str]:
    return sorted(key for key, app in settings.apps.items() if app.adjust is not None)


def binding_and_account(settings: Settings, app: str) -> tuple[AppBinding, str, AdjustAccount]:
    found = settings.apps.get(app)
    if found is None:
        raise ReconcileError(f"no [apps.{app}] in the configuration")
    if found.adjust is None:
        raise ReconcileError(f"[apps.{app}] has no [apps.{app}.adjust] binding")
    name = found.adjust.account
    account = settings.adjust.accounts.get(name)
    if account is None:  # the settings loader reports this already; be safe anyway
        raise ReconcileError(f"no [adjust.accounts.{name}] in the configuration")
    return found.adjust, name, account


def _our_table(result: QueryResult, currency: str) -> dict[CountKey, Decimal]:
    """Counts keyed like Adjust's from a query grouped by day, networks and countries."""
    counts: dict[CountKey, Decimal] = {}

    def add(key: CountKey, value: Decimal) -> None:
        if value:
            counts[key] = counts.get(key, Decimal(0)) + value

    for (day_text, network_token, country), sums in result.groups:
        tracker = result.trackers.get(network_token)
        network = tracker.names[0] if tracker is not None and tracker.names else network_token
        day = date.fromisoformat(day_text)
        for kind, count in sums.counts.items():
            kpi = _KIND_KPI.get(kind)
            if kpi is not None:
                add((day, network, country, kpi), Decimal(count))
        for token, count in sums.events.items():
            add((day, network, country, f"events:{token}"), Decimal(count))
        for (token, revenue_currency), amount in sums.event_revenue.items():
            if revenue_currency == currency:
                add((day, network, country, f"revenue:{token}"), amount)
    return counts


def regroup(
    counts: Mapping[CountKey, Decimal], groups: Mapping[str, tuple[str, ...]]
) -> dict[CountKey, Decimal]:
    """Our per-token event KPIs under Adjust's event keys (``tok1+tok2`` for a slug
    covering two tokens); a token Adjust did not name keeps its own key."""
    key_of = {token: key for key, tokens in groups.items() for token in tokens}
    out: dict[CountKey, Decimal] = {}
    for (day, network, country, kpi), value in counts.items():
        metric, _, token = kpi.partition(":")
        if token:
            kpi = f"{metric}:{key_of.get(token, token)}"
        key = (day, network, country, kpi)
        out[key] = out.get(key, Decimal(0)) + value
    return out


def _ours(
    store: KpiStore, app: str, binding: AppBinding, start: date, end: date, offset_s: int
) -> tuple[dict[CountKey, Decimal], dict[tuple[date, str], Decimal]]:
    query = KpiQuery(
        app=app,
        start=start,
        end=end,
        utc_offset_s=offset_s,
        reattributed=binding.reattributed(),
        grouping=("day", "networks", "countries"),
    )
    ours = _our_table(run_query(store, query), binding.currency)
    sandbox_result = run_query(
        store,
        KpiQuery(
            app=app,
            start=start,
            end=end,
            utc_offset_s=offset_s,
            sandbox=True,
            reattributed=binding.reattributed(),
            grouping=("day", "networks", "countries"),
        ),
    )
    sandbox: dict[tuple[date, str], Decimal] = {}
    for (day, _, _, kpi), value in _our_table(sandbox_result, binding.currency).items():
        sandbox[(day, kpi)] = sandbox.get((day, kpi), Decimal(0)) + value
    return ours, sandbox


def _applied_differences(binding: AppBinding, table: Table) -> tuple[str, ...]:
    """Where Adjust says it applied something other than what the binding asked."""
    applied: dict[str, object] = {}
    for name in ("utc_offset", "attribution_source", "sandbox"):
        if name in table.applied:
            applied[name] = table.applied[name]
    if "attribution_status" in table.applied:
        applied["reattributed"] = table.applied["attribution_status"]
    if "utc_offset" in applied and not str(applied["utc_offset"]).startswith(("+", "-")):
        applied["utc_offset"] = f"+{applied['utc_offset']}"
    if table.currency is not None:
        applied["currency"] = table.currency
    asked = {
        "utc_offset": binding.utc_offset,
        "attribution_source": binding.attribution_source,
        "sandbox": binding.sandbox,
        "reattributed": binding.reattributed(),
        "currency": binding.currency,
    }
    return setting_differences(asked, applied, "Adjust applied")


async def reconcile(
    settings: Settings,
    app: str,
    start: date,
    end: date,
    *,
    client: PullClient,
    store: KpiStore,
    tolerance: Tolerance,
    now: datetime | None = None,
    save: bool = True,
) -> Report:
    """Compare ``app``'s days ``start``..``end`` (local to its binding's UTC offset)."""
    binding, account_name, account = binding_and_account(settings, app)
    now = now or datetime.now(UTC)
    pull_binding = binding_of(app, binding)
    offset_s = pull_binding.offset_seconds()
    ours, sandbox = await asyncio.to_thread(_ours, store, app, binding, start, end, offset_s)
    sessions = any(kpi == "sessions" for (_, _, _, kpi) in ours)
    try:
        table = await client.pull(
            account_name, account, binding_of(app, binding, sessions=sessions), Query(start, end)
        )
    except PullError as exc:
        raise ReconcileError(str(exc)) from None
    theirs = table_counts(table)
    ours = regroup(ours, table.event_groups)
    rejections = await asyncio.to_thread(counts_by_day, store, app, start, end, offset_s)
    differences = list(_applied_differences(binding, table))
    if account.report is not None:
        differences += setting_differences(
            binding.report_fields(), account.report.report_fields(), "account"
        )
    evidence = Evidence(
        now=now,
        utc_offset_s=offset_s,
        rejections=rejections,
        sandbox=sandbox,
        settings=tuple(differences),
    )
    lines = compare(ours, theirs, tolerance, evidence)
    report = Report(app, start, end, lines, now)
    if save:
        await asyncio.to_thread(store_report, store, report)
    return report


def store_report(store: KpiStore, report: Report) -> None:
    rows = [
        reconciliations.ResultRow(
            report.app,
            line.day.isoformat(),
            line.kpi,
            line.scope,
            line.value,
            line.ours,
            line.theirs,
            line.verdict,
            tuple(cause.code for cause in line.causes),
        )
        for line in report.lines
    ]
    reconciliations.save(store, int(report.checked_at.timestamp() * 1000), rows)
