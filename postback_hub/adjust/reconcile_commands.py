"""Commands of Adjust's numbers and their reconciliation with ours.

- ``postback-hub adjust pull --app APP --from DATE --to DATE [--grouping day,network]
  [--csv|--json]``: Adjust's numbers for the binding (registered in the ``adjust``
  group through :func:`register_adjust_actions`).
- ``postback-hub reconcile --app APP (--date DATE | --from DATE --to DATE)``: the
  table ours / Adjust's / difference / ratio / verdict / cause, overall, per
  network and per country; exit 1 when a gap is beyond tolerance.
- ``postback-hub reconcile --watch``: the scheduled mode (every bound app, the
  lookback's complete days, every ``--interval-s``), with ``/metrics`` on ``--port``;
  ``run`` starts it when ``[reconcile] enabled``. Flags left out take ``[reconcile]``'s
  values.
- ``postback-hub last-callback [--app APP]``: the last production activity per app,
  kind and event token, from the store.

Exit codes: 0 done (no gap), 1 a gap beyond tolerance, 2 the command, the
configuration or the pull went wrong. No token is ever printed: pull errors come
from :mod:`postback_hub.adjust.http`, which scrubs them.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiohttp import web

from postback_hub.adjust.pull import PullClient, PullError, binding_of
from postback_hub.adjust.pull_parse import GROUPINGS, Format, PullProblem, Query, Table
from postback_hub.adjust.reconcile import Line, Tolerance, number_text, render
from postback_hub.adjust.reconcile_run import (
    ReconcileError,
    Report,
    binding_and_account,
    bound_apps,
    reconcile,
)
from postback_hub.adjust.reconcile_watch import (
    MAX_LOOKBACK_DAYS,
    ReconcileMetrics,
    WatchOptions,
    watch,
)
from postback_hub.consumers.registry import load_settings
from postback_hub.kpi.reconciliations import last_activity
from postback_hub.kpi.store import KpiStore
from postback_hub.service.logs import configure_logging
from postback_hub.service.secrets import unresolved
from postback_hub.service.settings import ConfigError, Settings


class CommandError(Exception):
    """A one-line reason the command cannot go on (exit 2)."""


def _settings(args: argparse.Namespace) -> Settings:
    try:
        return load_settings(args.config, app_secrets=False)
    except ConfigError as exc:
        raise CommandError("; ".join(exc.problems)) from None


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _days(args: argparse.Namespace) -> tuple[date, date]:
    if args.date is not None:
        if args.start is not None or args.end is not None:
            raise CommandError("give --date or --from/--to, not both")
        return args.date, args.date
    if args.start is None or args.end is None:
        raise CommandError("give --date DATE, or --from DATE and --to DATE")
    if args.end < args.start:
        raise CommandError("--to is before --from")
    if (args.end - args.start).days > 366:
        raise CommandError("at most 367 days at once")
    return args.start, args.end


def _check_account(settings: Settings, app: str) -> None:
    _, name, account = binding_and_account(settings, app)
    problems = [
        f"{where}: {secret.problem}"
        for where, secret in unresolved(account, f"adjust.accounts.{name}")
    ]
    if problems:
        raise CommandError("; ".join(problems))


def _run(main: Any, args: argparse.Namespace) -> int:
    try:
        code: int = asyncio.run(main(args))
    except CommandError as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return 2
    except (ReconcileError, PullError, PullProblem) as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return 2
    return code


# ------------------------------------------------------------------ adjust pull


def table_rows(table: Table) -> tuple[list[str], list[list[str]]]:
    """Adjust's table as a header (grouping, then KPIs) and rows of text."""
    kpis = sorted({kpi for _, kpi in table.values})
    rows: dict[tuple[str, ...], dict[str, Decimal]] = {}
    for (dims, kpi), value in table.values.items():
        rows.setdefault(dims, {})[kpi] = value
    header = [*table.grouping, *kpis]
    body = [
        [*dims, *(number_text(values.get(kpi, Decimal(0))) for kpi in kpis)]
        for dims, values in sorted(rows.items())
    ]
    return header, body


async def _pull(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _check_account(settings, args.app)
    binding, name, account = binding_and_account(settings, args.app)
    grouping = tuple(g for g in args.grouping.split(",") if g)
    query = Query(args.start, args.end, grouping)
    fmt: Format = "csv" if args.csv else "json"
    async with PullClient() as client:
        table = await client.pull(
            name, account, binding_of(args.app, binding, sessions=args.sessions), query, fmt=fmt
        )
    header, body = table_rows(table)
    if args.json:
        print(
            json.dumps(
                {
                    "app": args.app,
                    "backend": account.pull_backend,
                    "currency": table.currency,
                    "grouping": list(grouping),
                    "rows": [dict(zip(header, row, strict=True)) for row in body],
                },
                indent=2,
            )
        )
    elif args.csv:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(body)
        print(out.getvalue(), end="")
    else:
        print(_aligned([header, *body]), end="")
    return 0


def _aligned(cells: Sequence[Sequence[str]]) -> str:
    if not cells:
        return ""
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        + "\n"
        for row in cells
    )


# ------------------------------------------------------------------ reconcile


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def _tolerance(args: argparse.Namespace, settings: Settings) -> Tolerance:
    """The flags', else ``[reconcile]``'s tolerance."""
    pct = _or(args.tolerance_pct, settings.reconcile.tolerance_pct)
    minimum = _or(args.tolerance_min, settings.reconcile.tolerance_min)
    if pct < 0 or minimum < 0:
        raise CommandError("tolerances are not negative")
    return Tolerance(Decimal(str(pct)) / 100, Decimal(str(minimum)))


def _line_json(line: Line) -> dict[str, Any]:
    return {
        "day": line.day.isoformat(),
        "kpi": line.kpi,
        "scope": line.scope,
        "value": line.value,
        "ours": number_text(line.ours),
        "adjust": number_text(line.theirs),
        "difference": number_text(line.difference),
        "ratio": None if line.ratio is None else str(line.ratio),
        "verdict": line.verdict,
        "causes": [{"code": c.code, "text": c.text} for c in line.causes],
    }


def _print_report(report: Report, args: argparse.Namespace) -> None:
    lines = report.gaps if args.gaps_only else report.lines
    if args.json:
        print(
            json.dumps(
                {
                    "app": report.app,
                    "from": report.start.isoformat(),
                    "to": report.end.isoformat(),
                    "gaps": len(report.gaps),
                    "lines": [_line_json(line) for line in lines],
                },
                indent=2,
            )
        )
        return
    print(
        f"{report.app}: {report.start} .. {report.end}, {len(report.gaps)} gap(s) beyond tolerance"
    )
    print(render(lines), end="")


async def _reconcile(args: argparse.Namespace) -> int:
    settings = _settings(args)
    lookback = _or(args.lookback, settings.reconcile.lookback_days)
    if lookback < 1 or lookback > MAX_LOOKBACK_DAYS:
        raise CommandError(f"--lookback is 1 to {MAX_LOOKBACK_DAYS} days")
    apps = [args.app] if args.app else bound_apps(settings)
    if not apps and not args.watch:  # the watch still publishes the last callbacks
        raise CommandError("no app has an [apps.KEY.adjust] binding")
    for app in apps:
        _check_account(settings, app)
    tolerance = _tolerance(args, settings)
    store = await asyncio.to_thread(KpiStore.open, settings.kpi.database_url)
    try:
        async with PullClient() as client:
            if args.watch:
                return await _watch(args, settings, tolerance, client, store)
            start, end = _days(args)
            gaps = 0
            for app in apps:
                report = await reconcile(
                    settings, app, start, end, client=client, store=store, tolerance=tolerance
                )
                _print_report(report, args)
                gaps += len(report.gaps)
            return 1 if gaps else 0
    finally:
        await asyncio.to_thread(store.close)


async def _watch(
    args: argparse.Namespace,
    settings: Settings,
    tolerance: Tolerance,
    client: PullClient,
    store: KpiStore,
) -> int:
    configure_logging(settings.logging.level)
    usual = settings.reconcile
    options = WatchOptions(
        tolerance=tolerance,
        lookback_days=_or(args.lookback, usual.lookback_days),
        interval_s=_or(args.interval_s, usual.interval_s),
        silence_s=_or(args.silence_h, usual.silence_hours) * 3600,
    )
    metrics = ReconcileMetrics()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner: web.AppRunner | None = None
    port = _or(args.port, settings.reconcile.metrics_port)
    if port is not None:
        runner = await _serve_metrics(metrics, port)
    try:
        await watch(settings, options, client=client, store=store, metrics=metrics, stop=stop)
    finally:
        if runner is not None:
            await runner.cleanup()
    return 0


async def _serve_metrics(metrics: ReconcileMetrics, port: int) -> web.AppRunner:
    async def endpoint(_request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", endpoint)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


# ------------------------------------------------------------------ last-callback


async def _last_callback(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.app is not None and args.app not in settings.apps:
        raise CommandError(f"no [apps.{args.app}] in the configuration")
    store = await asyncio.to_thread(KpiStore.open, settings.kpi.database_url)
    try:
        now = datetime.now(UTC)
        since = int((now - timedelta(days=args.days)).timestamp())
        found = await asyncio.to_thread(last_activity, store, since, args.app)
    finally:
        await asyncio.to_thread(store.close)
    items = [
        {
            "app": item.app,
            "kind": item.activity_kind,
            "event_token": item.event_token,
            "last": datetime.fromtimestamp(item.bucket, UTC).strftime("%Y-%m-%dT%H:%MZ"),
            "ago_h": round((now.timestamp() - item.bucket) / 3600, 1),
        }
        for item in found
    ]
    if args.json:
        print(json.dumps(items, indent=2))
    else:
        cells = [["app", "kind", "event_token", "last (quarter-hour, UTC)", "hours ago"]]
        cells += [
            [
                item.app,
                item.activity_kind,
                item.event_token or "-",
                str(entry["last"]),
                str(entry["ago_h"]),
            ]
            for item, entry in zip(found, items, strict=True)
        ]
        print(_aligned(cells), end="")
    return 0


# ------------------------------------------------------------------ the parsers


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="configuration file (TOML)")


def register_adjust_actions(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``adjust pull``, added to the ``adjust`` group of :mod:`postback_hub.adjust.commands`."""
    pull = actions.add_parser("pull", help="Adjust's numbers for an app binding")
    _common(pull)
    pull.add_argument("--app", required=True, help="an app key with an [apps.KEY.adjust] binding")
    pull.add_argument("--from", dest="start", type=_day, required=True, help="first local day")
    pull.add_argument("--to", dest="end", type=_day, required=True, help="last local day")
    pull.add_argument(
        "--grouping",
        default="day",
        help=f"comma-separated, of {', '.join(GROUPINGS)} (default: day)",
    )
    pull.add_argument("--sessions", action="store_true", help="ask for sessions too")
    output = pull.add_mutually_exclusive_group()
    output.add_argument("--csv", action="store_true", help="ask Adjust for CSV, print CSV")
    output.add_argument("--json", action="store_true", help="print JSON")
    pull.set_defaults(func=lambda args: _run(_pull, args))


def register_cli(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``reconcile`` and ``last-callback``."""
    rec = commands.add_parser("reconcile", help="compare our counts with Adjust's")
    _common(rec)
    rec.add_argument("--app", help="one app key (default: every bound app)")
    rec.add_argument("--date", type=_day, help="one local day")
    rec.add_argument("--from", dest="start", type=_day, help="first local day")
    rec.add_argument("--to", dest="end", type=_day, help="last local day")
    rec.add_argument("--tolerance-pct", type=float, help="percent (default [reconcile], 1)")
    rec.add_argument("--tolerance-min", type=float, help="absolute (default [reconcile], 5)")
    rec.add_argument("--gaps-only", action="store_true", help="print only gaps")
    rec.add_argument("--json", action="store_true", help="print JSON")
    rec.add_argument("--watch", action="store_true", help="the scheduled mode")
    rec.add_argument("--lookback", type=int, help="watch: days re-checked, 1-30 (default 3)")
    rec.add_argument("--interval-s", type=float, help="watch: between cycles (default 3600)")
    rec.add_argument("--silence-h", type=float, help="watch: install silence (default 6)")
    rec.add_argument("--port", type=int, help="watch: serve /metrics here")
    rec.set_defaults(func=lambda args: _run(_reconcile, args))

    last = commands.add_parser("last-callback", help="the last activity per app, kind, event")
    _common(last)
    last.add_argument("--app", help="one app key")
    last.add_argument("--days", type=int, default=30, help="how far back to look (default 30)")
    last.add_argument("--json", action="store_true", help="print JSON")
    last.set_defaults(func=lambda args: _run(_last_callback, args))
