"""Structured JSON logs that cannot carry a device id, an IP or a secret.

Safety by construction: the receiver only ever logs app keys, activity kinds,
fingerprints, statuses and timings. As a second line of defence, log records
from libraries that might echo a request (aiohttp's protocol errors) are reduced
to their exception type before they are written.
"""

from __future__ import annotations

import logging
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

# Attributes every LogRecord has; anything else came in through ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
# Loggers whose messages may quote raw request data.
_UNTRUSTED = ("aiohttp.server", "aiohttp.web", "aiohttp.access", "aiohttp.internal", "asyncio")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        if record.name.startswith(_UNTRUSTED):
            entry["msg"] = "request handling error"
            if record.exc_info and record.exc_info[0] is not None:
                entry["error"] = record.exc_info[0].__name__
            return orjson.dumps(entry).decode()
        entry["msg"] = record.getMessage()
        for key, value in vars(record).items():
            if key not in _STANDARD:
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = record.exc_info[0].__name__
            # Where it failed, not the exception's message, which may quote request data.
            entry["traceback"] = "".join(traceback.format_tb(record.exc_info[2]))
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiokafka is chatty at INFO about every reconnect attempt.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))


class AccessLogger(AbstractAccessLogger):
    """Method, route, status and time. Not the path itself (a caller can put a device id in
    ``{app}``), not the query string (device ids, the secret), not the address."""

    @property
    def enabled(self) -> bool:
        # aiohttp's base class says True, which would build and drop a record per request
        # when INFO is off (the usual production level); aiohttp reads this per connection.
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        try:
            # A request that failed to parse has no match_info (aiohttp asserts on access).
            resource = request.match_info.route.resource  # type: ignore[attr-defined]
        except Exception:
            resource = None
        self.logger.info(
            "request",
            extra={
                "method": request.method,
                "route": resource.canonical if resource is not None else "unmatched",
                "status": response.status,
                "duration_ms": round(time * 1000, 2),
            },
        )
