"""A server that answers at once, run as its own process so it does not share a core's
event loop with what is being measured. Prints its port, then serves until killed.

    python benchmarks/answer_server.py PORT ingest    # the ingest baseline: 204, no Kafka
    python benchmarks/answer_server.py PORT partner   # a partner: 200 with a JSON body
"""

from __future__ import annotations

import asyncio
import sys

import uvloop
from aiohttp import web


async def no_content(_request: web.Request) -> web.Response:
    return web.Response(status=204)


async def accepted(_request: web.Request) -> web.Response:
    return web.Response(text='{"status":"ok"}', content_type="application/json")


ROLES = {
    "ingest": ("/v1/adjust/{app}", no_content),
    "partner": ("/{tail:.*}", accepted),
}


async def main(port: int, role: str) -> None:
    path, handler = ROLES[role]
    app = web.Application()
    app.router.add_route("*", path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
    print(port, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), sys.argv[2]))
