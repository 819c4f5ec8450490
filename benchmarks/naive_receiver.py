"""The naive peer of the receiver: what someone writes in an afternoon with the same libraries.

aiohttp plus aiokafka, ``send_and_wait`` of ``dict(request.query)`` as JSON with
``acks=all`` and idempotence, on uvloop, answering 200 after the broker's ack. No
secret check, strict decoding, normalising, fingerprint, metrics, bound on the wait
or partition key (aiokafka spreads keyless records itself). Run as its own process;
prints its port once it can take callbacks, then serves until killed.

    python benchmarks/naive_receiver.py PORT BOOTSTRAP TOPIC
"""

from __future__ import annotations

import asyncio
import sys

import orjson
import uvloop
from aiohttp import web
from aiokafka import AIOKafkaProducer

PRODUCER = web.AppKey("producer", AIOKafkaProducer)
TOPIC = web.AppKey("topic", str)


async def receive(request: web.Request) -> web.Response:
    await request.app[PRODUCER].send_and_wait(request.app[TOPIC], orjson.dumps(dict(request.query)))
    return web.Response(text='{"status":"queued"}', content_type="application/json")


async def main(port: int, bootstrap: str, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    app = web.Application()
    app[PRODUCER] = producer
    app[TOPIC] = topic
    app.router.add_route("*", "/v1/adjust/{app}", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
    print(port, flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await producer.stop()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
