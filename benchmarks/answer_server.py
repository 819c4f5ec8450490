"""A server that answers at once, run as its own process so it does not share a core's
event loop with what is being measured. Prints its port, then serves until killed.

    python benchmarks/answer_server.py PORT ingest    # the ingest baseline: 204, no Kafka
    python benchmarks/answer_server.py PORT partner   # a partner: 200 with a JSON body
    python benchmarks/answer_server.py PORT counting  # the same, and counts what it answers

The counting partner lets forwarders in other processes be timed alike: ``GET /__stats``
gives the answers so far with the wall-clock times of the first and the last,
``DELETE /__stats`` starts counting anew.
"""

from __future__ import annotations

import asyncio
import sys
import time

import uvloop
from aiohttp import web


async def no_content(_request: web.Request) -> web.Response:
    return web.Response(status=204)


async def accepted(_request: web.Request) -> web.Response:
    return web.Response(text='{"status":"ok"}', content_type="application/json")


class Tally:
    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.count = 0
        self.first = 0.0
        self.last = 0.0

    async def counted(self, _request: web.Request) -> web.Response:
        self.last = time.time()
        if not self.count:
            self.first = self.last
        self.count += 1
        return web.Response(text='{"status":"ok"}', content_type="application/json")

    async def stats(self, _request: web.Request) -> web.Response:
        return web.json_response({"count": self.count, "first": self.first, "last": self.last})

    async def reset(self, _request: web.Request) -> web.Response:
        self.clear()
        return web.Response(status=204)


ROLES = {
    "ingest": ("/v1/adjust/{app}", no_content),
    "partner": ("/{tail:.*}", accepted),
}


async def main(port: int, role: str) -> None:
    app = web.Application()
    if role == "counting":
        tally = Tally()
        app.router.add_get("/__stats", tally.stats)
        app.router.add_delete("/__stats", tally.reset)
        app.router.add_route("*", "/{tail:.*}", tally.counted)
    else:
        path, handler = ROLES[role]
        app.router.add_route("*", path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
    print(port, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), sys.argv[2]))
