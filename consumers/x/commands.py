"""``postback-hub x ...``: support tools for the X destination.

- ``x hash DEVICE_ID --app APP``: the hashed_device_id X would receive.
- ``x attribution --app APP --device-id ID --type T --time ISO``: asks X's
  ``GET conversion_attribution`` (signed like conversion_event; records nothing).
- ``x event-tags sync --app APP``: reads the account's ``app_event_tags`` and writes
  their windows per conversion type to the app's ``event_tags_file``, which the
  destination adopts at its next start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from postback_hub.consumers.registry import load_settings
from postback_hub.consumers.x.client import XClient
from postback_hub.consumers.x.config import (
    CLICK_WINDOWS,
    CONVERSION_TYPES,
    VIEW_THROUGH_WINDOWS,
    XApp,
    XDestination,
    checked_windows,
)
from postback_hub.consumers.x.mapping import decode_key, hash_device_id, normalise_device_id
from postback_hub.consumers.x.tags import write_windows

# X's conversion_time: UTC, ISO-8601, exactly three millisecond digits.
_CONVERSION_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")


def _valid_conversion_time(text: str) -> bool:
    if not _CONVERSION_TIME.fullmatch(text):
        return False
    try:
        datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        return False  # a month 13, a 31st of April
    return True


def _client(args: argparse.Namespace) -> tuple[XClient, XApp]:
    """The API client of the destination and the app the arguments name. The app's
    synced tags file is not read: a bad one can still be replaced by a sync."""
    settings = load_settings(args.config)
    config = settings.destinations.get(args.destination)
    if not isinstance(config, XDestination):
        raise SystemExit(f"no X destination {args.destination!r} in {args.config}")
    app = config.apps.get(args.app)
    if app is None:
        raise SystemExit(f"app {args.app!r} is not configured for {args.destination}")
    return XClient(config), app


def _hash(args: argparse.Namespace) -> int:
    _unused_client, app = _client(args)
    secret = app.hmac_key_development if args.development else app.hmac_key
    if secret is None:
        raise SystemExit(f"app {args.app!r} has no hmac_key_development")
    key = decode_key(secret.reveal())
    print(hash_device_id(key, normalise_device_id(args.device_id, app.normalisation)))
    return 0


async def _signed_get(client: XClient, app_key: str, url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        return await client.get_json(session, app_key, url)


def _attribution(args: argparse.Namespace) -> int:
    if not _valid_conversion_time(args.time):
        example = "2026-11-23T10:00:00.000Z"
        raise SystemExit(f"--time {args.time!r}: write UTC with milliseconds, e.g. {example}")
    try:
        checked_windows(args.click_window, args.view_through_window)
    except ValueError as exc:
        raise SystemExit(f"--click-window/--view-through-window: {exc}") from None
    client, app = _client(args)
    key = decode_key(app.hmac_key.reveal())
    params = {
        "app_id": app.app_id,
        "conversion_time": args.time,
        "conversion_type": args.type,
        "hashed_device_id": hash_device_id(
            key, normalise_device_id(args.device_id, app.normalisation)
        ),
        "os_type": app.os_type,
        "click_window": str(args.click_window),
        "view_through_window": str(args.view_through_window),
    }
    request = client.request(
        args.app, "GET", client.config.base_url, "conversion_attribution", params
    )
    status, answer = asyncio.run(_signed_get(client, args.app, request.url))
    print(json.dumps(answer, indent=2))
    return 0 if status == 200 else 1


def _event_tags_sync(args: argparse.Namespace) -> int:
    client, app = _client(args)
    if app.account_id is None or app.event_tags_file is None:
        raise SystemExit("set account_id and event_tags_file for this app first")
    resource = f"accounts/{app.account_id}/app_event_tags"
    windows: dict[str, tuple[int, int]] = {}
    skipped = 0
    cursor: str | None = None
    while True:
        query = {"count": "1000", **({"cursor": cursor} if cursor else {})}
        request = client.request(args.app, "GET", client.config.base_url, resource, query)
        status, answer = asyncio.run(_signed_get(client, args.app, request.url))
        if status != 200:
            print(json.dumps(answer, indent=2), file=sys.stderr)
            return 1
        for tag in answer.get("data", []):
            if tag.get("deleted") or tag.get("app_store_identifier") != app.app_id:
                continue
            kind = tag.get("conversion_type")
            try:
                if kind not in CONVERSION_TYPES:
                    raise ValueError(f"{kind!r} is not an X conversion type")
                click, view = checked_windows(
                    tag.get("post_engagement_attribution_window"),
                    tag.get("post_view_attribution_window"),
                )
            except ValueError as exc:
                # Adopting it would get every conversion of the type refused.
                print(f"tag {tag.get('id')!r} not adopted: {exc}", file=sys.stderr)
                skipped += 1
                continue
            windows[kind] = (click, view)
        cursor = answer.get("next_cursor")
        if not cursor:
            break
    path = Path(app.event_tags_file)
    write_windows(path, app.account_id, windows)
    for kind, (click, view) in sorted(windows.items()):
        print(f"{kind}: click_window={click} view_through_window={view}")
    print(f"wrote {path}; the destination adopts it at its next start", file=sys.stderr)
    return 1 if skipped else 0


def register_cli(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    x = commands.add_parser("x", help="support tools for the X destination")
    actions = x.add_subparsers(dest="x_command", required=True)

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--config", type=Path, required=True, help="configuration file (TOML)")
        parser.add_argument("--app", required=True, help="the app key")
        parser.add_argument("--destination", default="x", help="the X destination's key")

    hash_parser = actions.add_parser("hash", help="print the hashed_device_id X would receive")
    hash_parser.add_argument("device_id")
    hash_parser.add_argument("--development", action="store_true", help="use the development key")
    common(hash_parser)
    hash_parser.set_defaults(func=_hash)

    attribution = actions.add_parser("attribution", help="ask X's conversion_attribution")
    common(attribution)
    attribution.add_argument("--device-id", required=True)
    # A metavar keeps argparse from printing each list of choices twice (usage, options).
    attribution.add_argument(
        "--type",
        required=True,
        choices=CONVERSION_TYPES,
        metavar="TYPE",
        help=f"conversion type, one of {', '.join(CONVERSION_TYPES)}",
    )
    attribution.add_argument("--time", required=True, help="e.g. 2026-11-23T10:00:00.000Z")
    attribution.add_argument(
        "--click-window",
        type=int,
        default=14,
        choices=CLICK_WINDOWS,
        metavar="DAYS",
        help=f"one of {', '.join(map(str, CLICK_WINDOWS))} (default 14)",
    )
    attribution.add_argument(
        "--view-through-window",
        type=int,
        default=1,
        choices=VIEW_THROUGH_WINDOWS,
        metavar="DAYS",
        help=f"one of {', '.join(map(str, VIEW_THROUGH_WINDOWS))} (default 1)",
    )
    attribution.set_defaults(func=_attribution)

    tags = actions.add_parser("event-tags", help="app_event_tags of the advertiser account")
    tag_actions = tags.add_subparsers(dest="tags_command", required=True)
    sync = tag_actions.add_parser("sync", help="adopt X's windows per conversion type")
    common(sync)
    sync.set_defaults(func=_event_tags_sync)
