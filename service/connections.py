"""The receiver's HTTP connections: JSON answers to protocol errors, and limits on what a
slow or greedy client may hold.

aiohttp bounds each header line and their number, not their total, and waits for a
request head as long as the keep-alive timeout allows. A worker must not let a few
hundred connections that trickle or stall hold its memory and file descriptors, so
each connection here has:

- a byte cap on the header lines of a request (``max_header_bytes``): past it, 431;
- a deadline from a request head's first byte to its end (``header_timeout_s``):
  past it, 503 with ``Retry-After`` (not 408: Adjust drops anything answered 4xx,
  and slowness may be the network's);
- the keep-alive timeout for an idle connection (aiohttp's own, set by the runner);
- a cap on open connections per worker (``max_connections``, kept under the
  open-file limit): past it, a new connection is answered 503 with ``Retry-After``
  and closed, which Adjust retries.

Every refusal is a JSON body like the rest of the API, written straight to the
socket (no request exists yet), followed by a close. A head that arrives in one
read, as almost every real one does, costs none of this: the checks run only
while a head is incomplete.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
from dataclasses import dataclass
from typing import Any, cast

import orjson
from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger("postback_hub.connections")

# File descriptors a worker keeps for itself beyond its connections (Kafka, logs, ...).
_RESERVED_FDS = 64
# How long a refused connection is read (and dropped) before it is closed.
LINGER_S = 2.0


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_header_bytes: int
    header_timeout_s: float
    max_connections: int
    retry_after_s: int


def connection_cap(configured: int, open_file_limit: int) -> int:
    """Connections a worker may hold: the configured cap, kept under the open-file limit
    (past which accept fails and real requests would be the ones refused)."""
    return max(1, min(configured, open_file_limit - _RESERVED_FDS))


def open_file_limit() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def refusal(status: int, reason: str, code: str, message: str, headers: str = "") -> bytes:
    """A complete HTTP/1.1 answer with a JSON error body that closes the connection."""
    body = orjson.dumps({"error": {"code": code, "field": None, "message": message}})
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n{headers}\r\n"
    )
    return head.encode("ascii") + body


_HEADERS_TOO_LARGE = refusal(
    431,
    "Request Header Fields Too Large",
    "headers_too_large",
    "the request's header lines are too large",
)


# Not 408: Adjust drops a callback answered 4xx for good, and a head that was slow
# may be the network's fault; a 503 is retried.
def _head_timeout(retry_after_s: int) -> bytes:
    return refusal(
        503,
        "Service Unavailable",
        "request_timeout",
        "the request head did not arrive in time; retry",
        f"Retry-After: {retry_after_s}\r\n",
    )


class GuardedRequestHandler(RequestHandler):
    """aiohttp's connection handler with the limits above and JSON protocol errors."""

    __slots__ = (
        "_head_bytes",
        "_head_deadline",
        "_head_line_done",
        "_head_request_count",
        "_last_payload",
        "_limits",
    )

    def __init__(self, manager: web.Server, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limits = limits
        # The head being read: header-line bytes so far, whether its request line ended.
        self._head_bytes = 0
        self._head_line_done = False
        self._head_deadline: asyncio.TimerHandle | None = None
        self._head_request_count = 0
        # The body of the newest request: while it is unread, bytes are body, not head.
        self._last_payload: StreamReader | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        server = cast(GuardedServer, self._manager)
        if server.open_connections() > self._limits.max_connections:
            log.warning("connection refused: too many open connections")
            self._refuse(
                refusal(
                    503,
                    "Service Unavailable",
                    "too_many_connections",
                    "too many open connections; retry later",
                    f"Retry-After: {self._limits.retry_after_s}\r\n",
                )
            )

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._close or self._force_close:
            return  # refused or closing: dropped, as the base class would
        payload = self._last_payload
        reading_head = payload is None or payload.is_eof()
        count = self._request_count
        super().data_received(data)
        if self._request_count != count:
            # A head was parsed (or refused by the parser): the next one starts afresh.
            self._last_payload = self._messages[-1][1] if self._messages else None
            self._head_bytes = 0
            self._head_line_done = False
            self._cancel_head_deadline()
        elif reading_head and data and not (self._close or self._force_close):
            self._count_head(data)

    def _count_head(self, data: bytes) -> None:
        """An incomplete head grew by ``data``: enforce the byte cap, start the deadline."""
        if self._head_line_done:
            self._head_bytes += len(data)
        else:
            end_of_line = data.find(b"\n")
            if end_of_line >= 0:  # the request line has its own bound (max_line_size)
                self._head_line_done = True
                self._head_bytes += len(data) - end_of_line - 1
        if self._head_bytes > self._limits.max_header_bytes:
            self._refuse(_HEADERS_TOO_LARGE)
        elif self._head_deadline is None:
            self._head_request_count = self._request_count
            self._head_deadline = self._loop.call_later(
                self._limits.header_timeout_s, self._head_timed_out
            )

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self._request_count != self._head_request_count or self._force_close:
            return
        if self._request_in_progress:
            # A pipelined head behind a request still being answered: give it more time.
            self._head_deadline = self._loop.call_later(
                self._limits.header_timeout_s, self._head_timed_out
            )
            return
        self._refuse(_head_timeout(self._limits.retry_after_s))

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _refuse(self, answer: bytes) -> None:
        """Answer with ``answer``, then close after a short linger.

        Closing a socket with unread input makes the kernel reset it, and a reset can
        destroy the answer before the client reads it. So the write side is shut
        (the client sees the answer, then EOF) and whatever still arrives is read
        and dropped until the client closes or the linger ends.
        """
        self._cancel_head_deadline()
        transport = self.transport
        if transport is None or self._request_in_progress:
            self.force_close()
            return
        with contextlib.suppress(Exception):
            transport.write(answer)
            if transport.can_write_eof():
                transport.write_eof()
        # From here the base class drops every byte that arrives and serves nothing.
        self.close()
        self._loop.call_later(LINGER_S, transport.close)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Protocol-level errors (a request that is not valid HTTP) in JSON like the rest."""
        # The base class logs (our formatter strips request data) and refuses if the
        # response has started; its plain-text body is replaced.
        super().handle_error(request, status, exc, message)
        if isinstance(exc, LineTooLong):
            status, code, text = (
                413,
                "payload_too_large",
                "the request line or a header is too long",
            )
        elif status < 500:
            code = "malformed_request"
            text = f"not a valid HTTP request: {(message or '').splitlines()[0] if message else ''}"
        else:
            code, text = "internal_error", "internal error"
        body = orjson.dumps({"error": {"code": code, "field": None, "message": text.strip()}})
        response = web.Response(status=status, body=body, content_type="application/json")
        response.force_close()
        return response


class GuardedServer(web.Server):
    """aiohttp's low-level server, making :class:`GuardedRequestHandler` connections."""

    limits: ConnectionLimits

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(self, loop=self._loop, limits=self.limits, **self._kwargs)

    def open_connections(self) -> int:
        return len(self._connections)


class ReceiverRunner(web.AppRunner):
    """An AppRunner whose connections have :class:`ConnectionLimits` (tested end to end)."""

    def __init__(self, app: web.Application, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._limits = limits

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # aiohttp builds the Server from the app; only its handler factory is ours.
        server.__class__ = GuardedServer
        cast(GuardedServer, server).limits = self._limits
        return server
