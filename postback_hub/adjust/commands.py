"""``postback-hub adjust ...``: Adjust accounts, app bindings and the App Automation API.

- ``adjust app show (--app-token T | --store-id S --platform P)``: the app as Adjust has it.
- ``adjust app channels (--app-token T | --app KEY)``: channels with active trackers.
- ``adjust app import --store-id S --platform P --as KEY [--write]``: the app's
  configuration fragment (binding, and the X app id and OS type), printed or
  written into the configuration file keeping its comments.
- ``adjust app create ...``: create from a template, or update with
  ``--force-update`` (the current ``channel_setup`` is read first and the change
  shown: Adjust replaces it whole); ``--dry-run`` shows the exact request, tokens
  masked; the ticket is followed to its end.
- ``adjust check``: the configuration against Adjust, app by app; exit 1 when
  something disagrees.

Every command takes ``--json``. Exit codes: 0 done, 1 Adjust said no or something
disagrees, 2 the command or the configuration is wrong. No API or signature token
is ever printed: messages come from :mod:`postback_hub.adjust.http`, which scrubs them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import tomlkit
from tomlkit.items import Table

from postback_hub.adjust.automation import (
    PLATFORMS,
    AdjustApp,
    AutomationClient,
    CreateRequest,
    TicketStatus,
    channel_setup_diff,
    checked_channel_setup,
    masked_request,
)
from postback_hub.adjust.http import AdjustHttpError
from postback_hub.consumers.registry import load_settings, parse_settings
from postback_hub.consumers.x.config import XDestination
from postback_hub.service.adjust_settings import AdjustAccount, AppBinding, ReportSettings
from postback_hub.service.secrets import UnresolvedSecret, unresolved
from postback_hub.service.settings import ConfigError, Settings

# The Adjust channel slug of a destination type's partner, unless [adjust.channels] says.
DEFAULT_CHANNELS = {"x": "twitter"}
# What `app import` writes when the account has no usual report settings: Adjust's
# own defaults, except attribution_types, which ingestr pins the same way because
# Adjust announced a change of its default.
FALLBACK_REPORT = {
    "utc_offset": "+00:00",
    "attribution_types": ["click", "engaged_ad"],
    "attribution_source": "dynamic",
    "attribution_status": "all",
    "ad_revenue_sources": [],
    "currency": "USD",
    "sandbox": False,
}
_X_CREDENTIALS = ("consumer_key", "consumer_secret", "access_token", "access_token_secret")


class CommandError(Exception):
    """A one-line reason the command cannot go on, with its exit code."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


# ------------------------------------------------------------------ plumbing


@dataclass
class Context:
    """What every command has: its arguments, the settings, and the output mode."""

    args: argparse.Namespace
    settings: Settings
    clients: dict[str, AutomationClient] = field(default_factory=dict)

    @property
    def json(self) -> bool:
        return bool(self.args.json)

    def account(self, name: str | None, app: str | None = None) -> tuple[str, AdjustAccount]:
        """The named account, the app binding's, or the only one configured."""
        accounts = self.settings.adjust.accounts
        if name is None and app is not None:
            binding = self.binding(app)
            name = binding.account
        if name is None:
            if len(accounts) != 1:
                known = ", ".join(sorted(accounts)) or "none configured"
                raise CommandError(f"say which account with --account (known: {known})")
            name = next(iter(accounts))
        account = accounts.get(name)
        if account is None:
            known = ", ".join(sorted(accounts)) or "none configured"
            raise CommandError(f"no [adjust.accounts.{name}] in the configuration (known: {known})")
        problems = [
            f"{where}: {secret.problem}"
            for where, secret in unresolved(account, f"adjust.accounts.{name}")
        ]
        if problems:
            raise CommandError("; ".join(problems))
        return name, account

    def binding(self, app: str) -> AppBinding:
        settings = self.settings.apps.get(app)
        if settings is None:
            raise CommandError(f"no [apps.{app}] in the configuration")
        if settings.adjust is None:
            raise CommandError(f"[apps.{app}] has no [apps.{app}.adjust] binding")
        return settings.adjust

    def client(
        self, session: aiohttp.ClientSession, name: str, account: AdjustAccount
    ) -> AutomationClient:
        if name not in self.clients:
            self.clients[name] = AutomationClient.for_account(session, name, account)
        return self.clients[name]

    def emit(self, data: Any, lines: list[str]) -> None:
        if self.json:
            print(json.dumps(data, indent=2, sort_keys=True))
        else:
            for line in lines:
                print(line)


Command = Callable[[Context, aiohttp.ClientSession], Awaitable[int]]


def _run(command: Command) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            # Only the account's own tokens matter here (checked when used), not the
            # secrets of apps and destinations.
            settings = load_settings(args.config, app_secrets=False)
        except ConfigError as exc:
            for problem in exc.problems:
                print(f"{args.config}: {problem}", file=sys.stderr)
            return 2
        context = Context(args, settings)

        async def main() -> int:
            async with aiohttp.ClientSession() as session:
                return await command(context, session)

        try:
            return asyncio.run(main())
        except CommandError as exc:
            return _fail(context, str(exc), exc.code)
        except AdjustHttpError as exc:
            return _fail(context, exc.message, 1)
        except (UnresolvedSecret, ValueError) as exc:
            return _fail(context, str(exc), 2)

    return run


def _fail(context: Context, message: str, code: int) -> int:
    if context.json:
        print(json.dumps({"error": message}))
    print(f"adjust: {message}", file=sys.stderr)
    return code


def _app_lines(app: AdjustApp) -> list[str]:
    lines = [
        f"app token:   {app.app_token}",
        f"name:        {app.name}",
        f"platform:    {app.platform}",
        f"store id:    {app.store_id}",
    ]
    if app.cross_promo_token:
        lines.append(f"cross promo: {app.cross_promo_token}")
    setup = channel_setup_diff({}, app.channel_setup)
    lines.append("channel_setup:" + ("" if setup else " (none)"))
    lines += [f"  {line[2:]}" for line in setup]
    return lines


# ------------------------------------------------------------------ app show / channels


async def _show(context: Context, session: aiohttp.ClientSession) -> int:
    args = context.args
    name, account = context.account(args.account)
    client = context.client(session, name, account)
    if args.app_token is not None:
        app = await client.app_by_token(args.app_token)
        what = f"app token {args.app_token}"
    else:
        if args.store_id is None or args.platform is None:
            raise CommandError("give --app-token, or --store-id with --platform")
        app = await client.app_by_store_id(args.store_id, args.platform)
        what = f"store id {args.store_id} on {args.platform}"
    if app is None:
        raise CommandError(f"no app with {what} on account {name}", 1)
    context.emit({"account": name, "app": app.as_json()}, _app_lines(app))
    return 0


async def _channels(context: Context, session: aiohttp.ClientSession) -> int:
    args = context.args
    token = args.app_token
    if args.app is not None:
        token = context.binding(args.app).app_token
    name, account = context.account(args.account, args.app)
    channels = await context.client(session, name, account).channels(token)
    context.emit(
        {"account": name, "app_token": token, "channels": channels},
        channels or [f"app {token} has no channel with an active tracker"],
    )
    return 0


# ------------------------------------------------------------------ app import


def _x_os_type(platform: str) -> str:
    return "IOS" if platform == "ios" else "ANDROID"


def _x_app_id(store_id: str, platform: str) -> str:
    """X knows an iOS app by its numeric App Store id (Adjust may show "id123")."""
    if platform == "ios" and re.fullmatch(r"id[0-9]+", store_id):
        return store_id[2:]
    return store_id


def _env_name(key: str, what: str) -> str:
    return "POSTBACK_HUB_" + re.sub(r"[^A-Z0-9]+", "_", f"{key}_{what}".upper())


def import_fragment(
    document: dict[str, Any],
    key: str,
    account: str,
    usual: ReportSettings | None,
    app: AdjustApp,
    x_destinations: list[str],
) -> dict[str, Any]:
    """The configuration fragment for an imported app, as plain TOML-able data.

    ``document`` is the configuration as parsed (secret references, never values):
    a new X app reuses the credential references of the destination's other apps.
    """
    report = usual.report_fields() if usual is not None else dict(FALLBACK_REPORT)
    binding = {"account": account, "app_token": app.app_token, **report}
    apps = document.get("apps") or {}
    fragment: dict[str, Any] = {"apps": {key: {"adjust": binding}}}
    if key not in apps:
        fragment["apps"][key] = {"secret": {"env": _env_name(key, "secret")}, "adjust": binding}
    destinations: dict[str, Any] = {}
    for name in x_destinations:
        x_apps = ((document.get("destinations") or {}).get(name) or {}).get("apps") or {}
        entry: dict[str, Any] = {
            "app_id": _x_app_id(app.store_id, app.platform),
            "os_type": _x_os_type(app.platform),
        }
        if key not in x_apps:
            other: dict[str, Any] = next(iter(x_apps.values()), {})
            for credential in (*_X_CREDENTIALS, "hmac_key"):
                entry[credential] = other.get(credential) or {
                    "env": _env_name(f"x_{key}", credential)
                }
        destinations[name] = {"apps": {key: entry}}
    if destinations:
        fragment["destinations"] = destinations
    return fragment


def _toml_item(value: Any) -> Any:
    if isinstance(value, dict) and set(value) <= {"env", "file"} and len(value) == 1:
        inline = tomlkit.inline_table()
        inline.update(value)
        return inline
    if isinstance(value, dict):
        table = tomlkit.table()
        for k, v in value.items():
            table[k] = _toml_item(v)
        return table
    return value


def _merge(target: Any, fragment: dict[str, Any]) -> None:
    """Set ``fragment`` into a tomlkit container, keeping everything else (and comments)."""
    for key, value in fragment.items():
        is_table = isinstance(value, dict) and not (
            set(value) <= {"env", "file"} and len(value) == 1
        )
        if is_table and key in target and isinstance(target[key], dict):
            _merge(target[key], value)
        else:
            item = _toml_item(value)
            if isinstance(item, Table) and key == "adjust":
                item.comment("from `postback-hub adjust app import`; check the report settings")
            target[key] = item


async def _import(context: Context, session: aiohttp.ClientSession) -> int:
    args = context.args
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", args.key):
        raise CommandError("--as: an app key is letters, digits, '.', '-' and '_'")
    name, account = context.account(args.account)
    app = await context.client(session, name, account).app_by_store_id(args.store_id, args.platform)
    if app is None:
        raise CommandError(
            f"no app with store id {args.store_id} on {args.platform} on account {name}", 1
        )
    x_destinations = sorted(
        d for d, config in context.settings.destinations.items() if isinstance(config, XDestination)
    )
    await asyncio.to_thread(_import_into, context, name, account, app, x_destinations)
    return 0


def _import_into(
    context: Context, name: str, account: AdjustAccount, app: AdjustApp, x_destinations: list[str]
) -> None:
    args = context.args
    path = Path(args.config)
    document = tomlkit.parse(path.read_text(encoding="utf-8"))
    fragment = import_fragment(
        document.unwrap(), args.key, name, account.report, app, x_destinations
    )
    if args.write:
        _merge(document, fragment)
        try:
            parse_settings(document.unwrap(), app_secrets=False, base_dir=path.resolve().parent)
        except ConfigError as exc:
            raise CommandError(
                "not written; the result would not load: " + "; ".join(exc.problems)
            ) from None
        path.write_text(tomlkit.dumps(document), encoding="utf-8")
        print(f"wrote [apps.{args.key}.adjust] into {path}", file=sys.stderr)
    rendered = tomlkit.document()
    _merge(rendered, fragment)
    context.emit(fragment, [] if args.write else [tomlkit.dumps(rendered).rstrip()])


# ------------------------------------------------------------------ app create


def _ticket_lines(status: TicketStatus) -> list[str]:
    lines = [f"ticket: {status.status}" + (f" ({status.kind})" if status.kind else "")]
    for section in status.sections:
        ok = ", ".join(section.successes) or "-"
        bad = ", ".join(section.failures) or "-"
        line = f"  {section.name}: succeeded {ok}; failed {bad}"
        if section.detail:
            line += f"; {section.detail}"
        lines.append(line)
    return lines


def _read_channel_setup(path: Path) -> dict[str, Any]:
    try:
        return checked_channel_setup(json.loads(path.read_text(encoding="utf-8")))
    except OSError as exc:
        raise CommandError(f"--channel-setup {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise CommandError(f"--channel-setup {path}: {exc}") from None


async def _create(context: Context, session: aiohttp.ClientSession) -> int:
    args = context.args
    name, account = context.account(args.account)
    setup = _read_channel_setup(args.channel_setup) if args.channel_setup else None
    client = context.client(session, name, account)
    client.poll_interval_s = max(0.01, args.poll_interval_s)
    changes: list[str] | None = None
    if args.force_update:
        current = await client.app_by_store_id(args.store_id, args.platform)
        if current is None:
            raise CommandError(
                f"no app with store id {args.store_id} on {args.platform} to update; "
                "create it with --template-app-token",
                1,
            )
        # Adjust replaces channel_setup whole: without a new one, send the current one.
        setup = current.channel_setup if setup is None else setup
        changes = channel_setup_diff(current.channel_setup, setup)
    request = CreateRequest(
        name=args.name,
        store_id=args.store_id,
        platform=args.platform,
        bundle_id=args.bundle_id or args.store_id,
        template_app_token=args.template_app_token,
        force_update=args.force_update,
        channel_setup=setup,
        editors=tuple(e.strip() for e in (args.editors or "").split(",") if e.strip()),
        android_signature_hash=args.android_signature_hash,
    )
    change_lines = [] if changes is None else ["channel_setup changes:", *(changes or ["  none"])]
    if args.dry_run:
        shown = masked_request(account.automation_url, request, signature=request.needs_signature)
        text = [f"{shown['method']} {shown['url']}"]
        text += [f"{k}: {v}" for k, v in shown["headers"].items()]
        text += ["", json.dumps(shown["body"], indent=2, sort_keys=True), *change_lines]
        context.emit({"request": shown, "channel_setup_changes": changes}, text)
        return 0
    if not context.json:
        for line in change_lines:
            print(line)
    created = await client.create(request)
    result: dict[str, Any] = {
        "adjust_app_token": created.app_token,
        "name": created.name,
        "store_id": created.store_id,
        "ticket_token": created.ticket_token,
        "channel_setup_changes": changes,
    }
    lines = [f"app token: {created.app_token}", f"ticket: {created.ticket_token}"]
    if created.ticket_token is None or args.no_follow:
        context.emit(result, lines)
        return 0
    if not context.json:
        for line in lines:
            print(line)

    def progress(status: TicketStatus) -> None:
        if not context.json:
            print(f"ticket {status.status}")

    final = await client.follow(created.ticket_token, on_status=progress)
    result["ticket"] = final.as_json()
    context.emit(result, _ticket_lines(final))
    return 0 if final.status == "COMPLETED" else 1


# ------------------------------------------------------------------ check


def _store_ids_match(adjust_store_id: str, x_app_id: str, platform: str) -> bool:
    return _x_app_id(adjust_store_id, platform) == _x_app_id(x_app_id, platform)


def differing_settings(binding: AppBinding, usual: ReportSettings) -> list[str]:
    """Names of the binding's report settings that differ from the account's usual ones."""
    mine, theirs = binding.report_fields(), usual.report_fields()
    return [
        f"{name} = {json.dumps(mine[name])} (usual {json.dumps(theirs[name])})"
        for name in mine
        if mine[name] != theirs[name]
    ]


async def _check(context: Context, session: aiohttp.ClientSession) -> int:
    settings = context.settings
    keys = [context.args.app] if context.args.app else sorted(settings.apps)
    report: dict[str, Any] = {}
    lines: list[str] = []
    unknown_channels = sorted(set(settings.adjust.channels) - set(settings.destinations))
    general = [f"[adjust.channels] names no destination {d!r}" for d in unknown_channels]
    for key in keys:
        binding = context.binding(key) if context.args.app else settings.apps[key].adjust
        if binding is None:
            continue
        problems, warnings, checked = await _check_app(context, session, key, binding)
        report[key] = {
            "account": binding.account,
            "app_token": binding.app_token,
            "problems": problems,
            "warnings": warnings,
            "checked": checked,
        }
        state = "DISAGREES" if problems else "OK"
        lines.append(f"{key}: {state} (app token {binding.app_token}, account {binding.account})")
        lines += [f"  problem: {p}" for p in problems]
        lines += [f"  warning: {w}" for w in warnings]
        lines += [f"  ok: {c}" for c in checked]
    if not report:
        lines.append("no app has an [apps.KEY.adjust] binding; nothing to check")
    lines += [f"problem: {p}" for p in general]
    ok = not general and all(not entry["problems"] for entry in report.values())
    context.emit({"ok": ok, "apps": report, "problems": general}, lines)
    return 0 if ok else 1


async def _check_app(
    context: Context, session: aiohttp.ClientSession, key: str, binding: AppBinding
) -> tuple[list[str], list[str], list[str]]:
    settings = context.settings
    problems: list[str] = []
    warnings: list[str] = []
    checked: list[str] = []
    try:
        name, account = context.account(binding.account)
    except CommandError as exc:
        return [str(exc)], warnings, checked
    if account.report is not None:
        differ = differing_settings(binding, account.report)
        if differ:
            warnings.append(
                f"report settings differ from account {name}'s usual: " + ", ".join(differ)
            )
    client = context.client(session, name, account)
    app = await client.app_by_token(binding.app_token)
    if app is None:
        problems.append(f"app token {binding.app_token} does not exist on account {name}")
        return problems, warnings, checked
    checked.append(f"app token exists: {app.name} ({app.platform}, store id {app.store_id})")
    destinations = {
        d: config
        for d, config in settings.destinations.items()
        if config.enabled and key in config.referenced_apps()
    }
    for d, config in destinations.items():
        if isinstance(config, XDestination):
            x_app = config.apps[key]
            expected = _x_os_type(app.platform)
            if x_app.os_type != expected:
                problems.append(
                    f"platform: Adjust has {app.platform}, destination {d} sends os_type "
                    f"{x_app.os_type} (expected {expected})"
                )
            elif not _store_ids_match(app.store_id, x_app.app_id, app.platform):
                problems.append(
                    f"store id: Adjust has {app.store_id}, destination {d} sends app_id "
                    f"{x_app.app_id}"
                )
            else:
                checked.append(f"destination {d} sends {x_app.os_type} {x_app.app_id}")
    slugs = {
        d: settings.adjust.channels.get(d) or DEFAULT_CHANNELS.get(config.type)
        for d, config in destinations.items()
    }
    if any(slugs.values()):
        active = set(await client.channels(binding.app_token))
        for d, slug in sorted(slugs.items()):
            if slug is None:
                warnings.append(
                    f"destination {d}: no channel slug to check (set [adjust.channels] {d} = ...)"
                )
            elif slug in active:
                checked.append(f"destination {d}: channel {slug} is active")
            else:
                problems.append(
                    f"destination {d}: Adjust lists no active channel {slug} for this app"
                )
    return problems, warnings, checked


# ------------------------------------------------------------------ the parser


def register_cli(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    adjust = commands.add_parser(
        "adjust", help="Adjust accounts: app bindings and the App Automation API"
    )
    actions = adjust.add_subparsers(dest="adjust_command", required=True)

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--config", type=Path, required=True, help="configuration file (TOML)")
        parser.add_argument("--account", help="[adjust.accounts.NAME] (default: the only one)")
        parser.add_argument("--json", action="store_true", help="print JSON")

    app = actions.add_parser("app", help="look up, import and create Adjust apps")
    app_actions = app.add_subparsers(dest="app_command", required=True)

    show = app_actions.add_parser("show", help="an app as Adjust has it")
    common(show)
    by = show.add_mutually_exclusive_group(required=True)
    by.add_argument("--app-token", help="the Adjust app token")
    by.add_argument("--store-id", help="bundle id (Android) or App Store id (iOS)")
    show.add_argument("--platform", choices=PLATFORMS, help="with --store-id")
    show.set_defaults(func=_run(_show))

    channels = app_actions.add_parser("channels", help="channels with active trackers")
    common(channels)
    which = channels.add_mutually_exclusive_group(required=True)
    which.add_argument("--app-token", help="the Adjust app token")
    which.add_argument("--app", help="an app key with an [apps.KEY.adjust] binding")
    channels.set_defaults(func=_run(_channels))

    imported = app_actions.add_parser("import", help="the configuration fragment of an app")
    common(imported)
    imported.add_argument("--store-id", required=True)
    imported.add_argument("--platform", required=True, choices=PLATFORMS)
    imported.add_argument("--as", dest="key", required=True, help="the app key under [apps]")
    imported.add_argument(
        "--write", action="store_true", help="write it into --config (comments are kept)"
    )
    imported.set_defaults(func=_run(_import))

    create = app_actions.add_parser("create", help="create from a template, or update an app")
    common(create)
    create.add_argument("--name", required=True)
    create.add_argument("--store-id", required=True)
    create.add_argument("--platform", required=True, choices=PLATFORMS)
    create.add_argument("--bundle-id", help="default: the store id")
    source = create.add_mutually_exclusive_group(required=True)
    source.add_argument("--template-app-token", help="copy this app's settings")
    source.add_argument("--force-update", action="store_true", help="update an existing app")
    create.add_argument("--channel-setup", type=Path, help="JSON file: the whole channel_setup")
    create.add_argument("--editors", help="comma-separated emails of users given access")
    create.add_argument("--android-signature-hash", help="needs the account's signature_token")
    create.add_argument("--dry-run", action="store_true", help="show the request, send nothing")
    create.add_argument("--no-follow", action="store_true", help="do not wait for the ticket")
    create.add_argument(
        "--poll-interval-s", type=float, default=2.0, help="between ticket polls (default 2)"
    )
    create.set_defaults(func=_run(_create))

    check = actions.add_parser("check", help="compare the configuration with Adjust")
    common(check)
    check.add_argument("--app", help="only this app key")
    check.set_defaults(func=_run(_check))

    # `adjust pull` (Adjust's numbers) lives with reconciliation and joins this group here.
    from postback_hub.adjust import reconcile_commands

    reconcile_commands.register_adjust_actions(actions)
