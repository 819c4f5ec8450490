"""End to end: from sending an Adjust callback to the partner receiving its request.

Runs ``postback-hub run`` (receiver + the module-partner consumer) against a partner
that records when each request arrives, sends callbacks at a moderate constant rate,
and prints p50/p99 of (partner receipt - callback sent). Target: p99 <= 250 ms.

    python -m benchmarks.e2e [--rate R] [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from benchmarks.common import broker, quiet_kafka_logs
from postback_hub.service.localkafka import free_port

SECRET = "bench-secret"  # noqa: S105 - a throwaway value for a local benchmark


def _spawn(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def main(args: argparse.Namespace) -> int:
    received: dict[str, float] = {}

    async def partner(request: web.Request) -> web.Response:
        received[request.query["adid"]] = time.perf_counter()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/pb/{partner}", partner)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    partner_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", partner_port).start()

    with broker(args.bootstrap) as bootstrap, tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        config = Path(tmp) / "config.toml"
        config.write_text(
            f'kafka = {{bootstrap_servers = "{bootstrap}", topic = "e2e-{time.time_ns()}",'
            " topic_partitions = 6}\n"
            f'receiver = {{host = "127.0.0.1", port = {port}, workers = 1}}\n'
            'logging = {level = "WARNING"}\n'
            'apps = {demo = {secret = {env = "BENCH_SECRET"}}}\n'
            "[destinations.bia]\n"
            'type = "module"\n'
            f'template = {{url = "http://127.0.0.1:{partner_port}/pb/{{credential}}",'
            ' params = {adid = "{adid}", kind = "{activity_kind}"}}\n'
            'apps = {demo = {credential = {env = "BENCH_PARTNER"}}}\n'
        )
        env = {**os.environ, "BENCH_SECRET": SECRET, "BENCH_PARTNER": "p1"}
        command = [sys.executable, "-m", "postback_hub", "run", "--config", str(config)]
        process = _spawn(command, env)
        try:
            sent: dict[str, float] = {}
            async with aiohttp.ClientSession() as session:
                url = f"http://127.0.0.1:{port}/v1/adjust/demo"
                for _ in range(300):  # the receiver and the consumer's group are ready
                    adid = f"warmup{time.time_ns()}"
                    try:
                        async with session.get(
                            f"{url}?secret={SECRET}&activity_kind=install&adid={adid}"
                        ) as response:
                            if response.status == 200:
                                await asyncio.sleep(0.5)
                                if adid in received:
                                    break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.2)

                async def one(n: int) -> None:
                    adid = f"{n + 1:032x}"
                    sent[adid] = time.perf_counter()
                    query = (
                        f"secret={SECRET}&activity_kind=install&adid={adid}&created_at_milli={n}"
                    )
                    async with session.get(f"{url}?{query}") as response:
                        await response.read()

                tasks: list[asyncio.Task[Any]] = []
                begin = time.perf_counter()
                n = 0
                while (elapsed := time.perf_counter() - begin) < args.seconds:
                    while n < int(elapsed * args.rate):
                        tasks.append(asyncio.create_task(one(n)))
                        n += 1
                    await asyncio.sleep(0.002)
                await asyncio.gather(*tasks)
            deadline = time.perf_counter() + 30
            while len(set(sent) & set(received)) < len(sent) and time.perf_counter() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        finally:
            process.terminate()
            process.wait(timeout=60)
            await runner.cleanup()
    latencies = [(received[a] - sent[a]) * 1000 for a in sent if a in received]
    quantiles = statistics.quantiles(latencies, n=100)
    p50, p99 = quantiles[49], quantiles[98]
    print(
        f"end to end at {args.rate:.0f} callbacks/s for {args.seconds} s: {len(latencies)} of"
        f" {len(sent)} delivered; p50 {p50:.1f} ms, p99 {p99:.1f} ms (target p99 <= 250 ms)"
        f" {'ok' if p99 <= 250 else 'ABOVE'}"
    )
    return 0


def cli() -> None:
    quiet_kafka_logs()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    raise SystemExit(asyncio.run(main(parser.parse_args())))


if __name__ == "__main__":
    cli()
