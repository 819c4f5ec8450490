"""The receiver's producer alone at a spread-out rate: does lingering batch callbacks
enough to pay for the wait it adds?

At 1,000 callbacks/s every record is its own produce request (aiokafka batches only
what arrives while a request is in flight). ``linger_ms`` holds a batch open for
that long: fewer requests, each callback later by up to the linger. This sends
records at a constant rate through ``CallbackProducer`` (acks=all, idempotent, the
receiver's partitioner and bound) with each linger in turn, alternating, and prints
CPU per record and the ack latency's p50/p99.

    python -m benchmarks.producer_linger [--rate R] [--seconds S] [--linger MS ...]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import uvloop

from benchmarks.common import broker, quiet_kafka_logs
from postback_hub.service.metrics import ReceiverMetrics
from postback_hub.service.producer import CallbackProducer
from postback_hub.service.settings import parse_settings
from postback_hub.service.topics import ensure_topic


async def run(
    bootstrap: str, linger_ms: int, rate: int, seconds: int
) -> tuple[float, float, float]:
    """(CPU us per record, p50 ms, p99 ms) of one constant-rate run."""
    topic = f"bench-linger-{uuid.uuid4().hex[:8]}"
    await ensure_topic({"bootstrap_servers": bootstrap}, topic, 12)
    settings = parse_settings(
        {
            "kafka": {
                "bootstrap_servers": bootstrap,
                "topic": topic,
                "create_topic": False,
                "linger_ms": linger_ms,
            },
            "apps": {},
        },
        {},
    )
    producer = CallbackProducer(settings, ReceiverMetrics())
    producer.start()
    await producer.wait_connected(30)
    latencies: list[float] = []

    async def one(n: int) -> None:
        started = time.perf_counter()
        await producer.produce(f"demo:{n:032x}".encode(), b'{"schema":1}' * 60)
        latencies.append((time.perf_counter() - started) * 1000)

    loop = asyncio.get_running_loop()
    tasks = []
    begin, cpu = loop.time(), time.process_time()
    for n in range(rate * seconds):
        # On schedule whatever the answers do (open loop), like Adjust's traffic.
        await asyncio.sleep(max(0.0, begin + n / rate - loop.time()))
        tasks.append(asyncio.create_task(one(n)))
    await asyncio.gather(*tasks)
    used = time.process_time() - cpu
    await producer.close()
    quantiles = statistics.quantiles(latencies, n=100)
    return used / len(latencies) * 1e6, quantiles[49], quantiles[98]


async def main(args: argparse.Namespace) -> int:
    with broker(args.bootstrap) as bootstrap:
        figures: dict[int, list[tuple[float, float, float]]] = {ms: [] for ms in args.linger}
        for _round in range(args.rounds):
            for linger_ms in args.linger:
                figures[linger_ms].append(await run(bootstrap, linger_ms, args.rate, args.seconds))
        print(f"producer alone, {args.rate} records/s for {args.seconds} s, medians of rounds")
        print(f"{'linger_ms':>9} {'CPU us/record':>14} {'p50 ms':>7} {'p99 ms':>7}")
        for linger_ms, rounds in figures.items():
            cpu, p50, p99 = (statistics.median(r[i] for r in rounds) for i in range(3))
            print(f"{linger_ms:>9} {cpu:>14.0f} {p50:>7.2f} {p99:>7.2f}")
    return 0


def cli() -> None:
    quiet_kafka_logs()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--linger", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    raise SystemExit(uvloop.run(main(parser.parse_args())))


if __name__ == "__main__":
    cli()
