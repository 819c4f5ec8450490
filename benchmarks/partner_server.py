"""A partner that answers at once, run as its own process so it does not share a core's
event loop with what is being measured. Prints its port, then serves until killed."""

from __future__ import annotations

import asyncio
import sys

import uvloop
from aiohttp import web


async def handle(_request: web.Request) -> web.Response:
    return web.Response(text='{"status":"ok"}', content_type="application/json")


async def main(port: int) -> None:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
    print(port, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
