"""The event-tags file: X's windows per conversion type, written by
``postback-hub x event-tags sync`` and read by the destination when it starts.

The file is JSON, ``{"account_id": ..., "windows": {"PURCHASE": [click, view], ...}}``.
A file X would refuse (a type or window X does not allow, click below view-through)
is a configuration error at start: sent, every conversion of that type would be
refused and dead-lettered. Rules come from :mod:`postback_hub.consumers.x.config`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from postback_hub.consumers.x.config import CONVERSION_TYPES, checked_windows
from postback_hub.service.settings import ConfigError


def read_windows(path: Path) -> dict[str, tuple[int, int]] | None:
    """The windows of the tags file at ``path``; None when there is no file (nothing
    synced yet). Raises ConfigError listing every problem of a file that is there."""
    if not path.exists():
        return None
    try:
        document = json.loads(path.read_text())
        pairs = document["windows"].items()
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        unreadable = f"{path}: not an event-tags file written by `x event-tags sync`"
        raise ConfigError([unreadable]) from None
    windows: dict[str, tuple[int, int]] = {}
    problems = []
    for kind, pair in pairs:
        if kind not in CONVERSION_TYPES:
            problems.append(f"{path}: {kind!r} is not an X conversion type")
            continue
        click, view = pair if isinstance(pair, list) and len(pair) == 2 else (None, None)
        try:
            windows[kind] = checked_windows(click, view)
        except ValueError as exc:
            problems.append(f"{path}: {kind}: {exc}")
    if problems:
        raise ConfigError(problems)
    return windows


def write_windows(path: Path, account_id: str, windows: Mapping[str, tuple[int, int]]) -> None:
    """Write the tags file (its folder created if need be), whole: the destination
    adopts it at its next start."""
    document = {"account_id": account_id, "windows": {k: list(v) for k, v in windows.items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
