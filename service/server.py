"""Running the receiver: one worker process, or a supervisor of several sharing a port.

Each worker binds the port with ``SO_REUSEPORT`` and the kernel spreads
connections over them, so every core serves requests with no proxy in front.

Graceful shutdown of a worker on SIGTERM: readiness turns false, after
``shutdown_drain_s`` the listener closes, in-flight requests finish (200 or
503: each waits at most ``produce_timeout_s``), then the producer flushes.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
from dataclasses import dataclass

from aiohttp import web

from postback_hub.service.app import LIFECYCLE, create_app
from postback_hub.service.connections import (
    LINGER_S,
    ConnectionLimits,
    ReceiverRunner,
    connection_cap,
    open_file_limit,
)
from postback_hub.service.logs import AccessLogger, configure_logging
from postback_hub.service.settings import Settings
from postback_hub.service.tuning import tune_gc

log = logging.getLogger("postback_hub.server")

# Room above max_request_bytes for the method, path and HTTP version on the request line,
# so an over-long query reaches our handler (and its JSON 413) instead of the parser's 400.
_REQUEST_LINE_SLACK = 16 * 1024


def worker_count(settings: Settings) -> int:
    return settings.receiver.workers or os.cpu_count() or 1


def event_loop_factory() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


@dataclass
class RunningReceiver:
    """A started receiver (app, runner, listening site) in this process."""

    app: web.Application
    runner: web.AppRunner
    settings: Settings

    async def shutdown(self) -> None:
        """Readiness false, drain, stop listening, finish in-flight requests, flush."""
        receiver = self.settings.receiver
        log.info("shutting down: draining", extra={"drain_s": receiver.shutdown_drain_s})
        lifecycle = self.app[LIFECYCLE]
        lifecycle.draining = True
        await asyncio.sleep(receiver.shutdown_drain_s)
        lifecycle.stop_by = asyncio.get_running_loop().time() + receiver.shutdown_timeout_s
        # Stops listening, waits for in-flight handlers, then runs cleanup_ctx (producer flush).
        await self.runner.cleanup()
        log.info("receiver stopped")


async def start_receiver(settings: Settings) -> RunningReceiver:
    receiver = settings.receiver
    app = create_app(settings)
    runner = ReceiverRunner(
        app,
        handle_signals=False,
        access_log_class=AccessLogger,
        access_log=logging.getLogger("postback_hub.access"),
        shutdown_timeout=receiver.shutdown_timeout_s,
        max_line_size=receiver.max_request_bytes + _REQUEST_LINE_SLACK,
        max_field_size=16 * 1024,
        keepalive_timeout=receiver.keepalive_timeout_s,
        # After an answer sent before the body was read (413, a slow body), the rest is
        # read and dropped this long so the client sees the answer, then closed.
        lingering_time=LINGER_S,
        limits=ConnectionLimits(
            max_header_bytes=receiver.max_header_bytes,
            header_timeout_s=receiver.header_timeout_s,
            max_connections=connection_cap(receiver.max_connections, open_file_limit()),
            retry_after_s=receiver.retry_after_s,
        ),
    )
    await runner.setup()
    site = web.TCPSite(runner, receiver.host, receiver.port, reuse_port=True, backlog=1024)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()  # the producer started with the app: close it
        raise
    log.info("receiver listening", extra={"host": receiver.host, "port": receiver.port})
    return RunningReceiver(app, runner, settings)


# A worker's exit status when its port is held by another program: the supervisor
# stops instead of restarting it twice a second.
EXIT_PORT_IN_USE = 3


class PortInUse(Exception):
    """The receiver's port could not be bound."""


async def serve_worker(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully."""
    try:
        running = await start_receiver(settings)
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
            raise
        raise PortInUse() from None
    tune_gc()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await running.shutdown()


def run_worker(settings: Settings) -> int:
    configure_logging(settings.logging.level)
    receiver = settings.receiver
    try:
        with asyncio.Runner(loop_factory=event_loop_factory) as runner:
            runner.run(serve_worker(settings))
    except PortInUse:
        log.error(
            "port in use by another program; not serving",
            extra={"host": receiver.host, "port": receiver.port},
        )
        return EXIT_PORT_IN_USE
    return 0
