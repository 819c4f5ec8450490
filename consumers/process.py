"""``postback-hub consume DEST``: one destination's consumer as a process.

SIGTERM stops fetching, lets in-flight deliveries finish (bounded), commits and
exits. ``/healthz``, ``/readyz`` and ``/metrics`` are served on the
destination's ``health_port`` (or ``--port``) when one is given.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from postback_hub.consumers.registry import Consumer, Registry, default_registry
from postback_hub.consumers.runtime.settle import DeadLetterLimitReached
from postback_hub.service.logs import configure_logging
from postback_hub.service.metrics import CONTENT_TYPE
from postback_hub.service.settings import Settings
from postback_hub.service.tuning import tune_gc

log = logging.getLogger("postback_hub.consumer")

# The exit status of a consumer stopped by its dead-letter limit. The supervisor does
# not restart it (a restart would dead-letter the next batch); under systemd use
# RestartPreventExitStatus=78.
EXIT_HALTED = 78


def health_app(runtime: Consumer) -> web.Application:
    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(_request: web.Request) -> web.Response:
        ready = runtime.ready
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=runtime.render_metrics(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def serve_consumer(
    settings: Settings, name: str, port: int | None = None, registry: Registry | None = None
) -> int:
    runtime = (registry or default_registry()).build(settings, name)
    port = port if port is not None else settings.destinations[name].health_port
    runner: web.AppRunner | None = None
    if port is not None:
        runner = web.AppRunner(health_app(runtime), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, settings.receiver.host, port).start()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, runtime.stop)
    code = 0
    try:
        await runtime.start()
        tune_gc()
        await runtime.run()
    except DeadLetterLimitReached:
        code = EXIT_HALTED  # said in one line already; a restart would repeat it
    except Exception:
        log.exception("consumer failed", extra={"destination": name})
        code = 1
    finally:
        await runtime.close()
        if runner is not None:
            await runner.cleanup()
    return code


def run_consumer(settings: Settings, name: str, port: int | None) -> int:
    from postback_hub.service.server import event_loop_factory

    configure_logging(settings.logging.level)
    with asyncio.Runner(loop_factory=event_loop_factory) as runner:
        return runner.run(serve_consumer(settings, name, port))
