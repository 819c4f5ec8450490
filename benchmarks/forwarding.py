"""Forwarding throughput: the consumer runtime versus a bare aiohttp client loop.

Both send the same requests (rendered by the destination itself) with the same
concurrency to the same partner process, in the same run; the ratio is what
counts, since absolute numbers drift with the machine. The runtime's figure
includes everything it does per message: Kafka fetch, decode, routing, the
request, the de-duplication record (acks=all) and the offset commits. It is
timed from its first delivery to its last; the start-up before (joining the
group, loading de-dup state) is printed apart.

A third loop is printed for reference: a minimal Kafka-fed forwarder. It
fetches the same records with aiokafka, decodes them, has the destination
prepare and send each (X signs), and commits twice a second; it keeps no
per-device order, writes no de-dup record, retries nothing and counts nothing.
It is a reference point, not a proven bound: what a forwarder that keeps none of
the runtime's guarantees reaches with the same libraries, here.

    python -m benchmarks.forwarding [--messages N] [--concurrency C] [--destination NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from typing import Any

import aiohttp
import uvloop
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from benchmarks.common import broker, partner_process, quiet_kafka_logs
from postback_hub.consumers.config import HttpDestination
from postback_hub.consumers.delivery import Delivered, Destination, HasTopics, HttpRequest
from postback_hub.consumers.registry import default_registry, parse_settings
from postback_hub.consumers.runtime import DeliveryRuntime
from postback_hub.consumers.x.client import as_x_request
from postback_hub.consumers.x.destination import XConversions
from postback_hub.service.normalise import normalise
from postback_hub.service.record import CallbackRecord
from postback_hub.service.settings import Settings
from postback_hub.service.topics import ensure_topic
from postback_hub.service.tuning import tune_gc

TARGET_RATIO = 0.5


def build_destination(settings: Settings, name: str) -> Destination:
    return default_registry().destination(settings, name)


def settings_for(bootstrap: str, topic: str, partner_url: str, concurrency: int) -> Settings:
    os.environ.setdefault("BENCH_SECRET", "bench-secret")
    os.environ.setdefault("BENCH_PARTNER", "partner-1")
    retry = {"attempts": 5, "in_process_s": 30.0, "backoff_initial_s": 0.05, "backoff_max_s": 1.0}
    module: dict[str, Any] = {
        "type": "module",
        "concurrency": concurrency,
        "retry": retry,
        "template": {
            "url": partner_url + "/pb/{credential}",
            "params": {
                "activity_kind": "{activity_kind}",
                "adid": "{adid}",
                "gps_adid": "{gps_adid}",
                "created_at": "{created_at_unix}",
                "event": "{partner_event_name}",
                "revenue": "{revenue}",
                "currency": "{currency}",
                "country": "{country}",
                "city": "{city}",
                "tracker_name": "{tracker_name}",
            },
        },
        "apps": {
            "demo": {
                "credential": {"env": "BENCH_PARTNER"},
                "forward_revenue": True,
                "event_links": {"tok_buy": "purchase"},
            }
        },
    }
    for name, value in {
        "BENCH_X_CK": "ck",
        "BENCH_X_CS": "cs",
        "BENCH_X_AT": "at",
        "BENCH_X_ATS": "ats",
        "BENCH_X_KEY": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    }.items():
        os.environ.setdefault(name, value)
    x: dict[str, Any] = {
        "type": "x",
        "base_url": partner_url,
        "concurrency": concurrency,
        "retry": retry,
        "apps": {
            "demo": {
                "app_id": "com.example.app",
                "os_type": "ANDROID",
                "consumer_key": {"env": "BENCH_X_CK"},
                "consumer_secret": {"env": "BENCH_X_CS"},
                "access_token": {"env": "BENCH_X_AT"},
                "access_token_secret": {"env": "BENCH_X_ATS"},
                "hmac_key": {"env": "BENCH_X_KEY"},
                "event_conversions": {"tok_buy": "PURCHASE"},
            }
        },
    }
    return parse_settings(
        {
            "kafka": {"bootstrap_servers": bootstrap, "topic": topic, "topic_partitions": 12},
            "apps": {"demo": {"secret": {"env": "BENCH_SECRET"}}},
            "destinations": {"module": module, "x": x},
        }
    )


def make_records(count: int) -> list[CallbackRecord]:
    """Realistic activities: installs then purchase events, four activities per device."""
    records = []
    for i in range(count):
        device, step = divmod(i, 4)
        kind = "install" if step == 0 else "event"
        pairs = [
            ("activity_kind", kind),
            ("adid", f"{device + 1:032x}"),
            ("gps_adid", f"{device + 1:08x}-8cf0-11bd-b23e-10b96e40000d"),
            ("created_at", str(1_700_000_000 + step)),
            ("country", "de"),
            ("city", "München"),
            ("tracker_name", "Network::Campaign::Adgroup::Creative"),
        ]
        if kind == "event":
            pairs += [("event", "tok_buy"), ("revenue", "499"), ("currency", "EUR")]
        records.append(
            normalise(
                pairs,
                app="demo",
                aliases={},
                default_environment="production",
                received_at_millis=time.time_ns() // 1_000_000,
            )
        )
    return records


async def bare_loop(requests: list[HttpRequest], concurrency: int) -> float:
    """The baseline: the same requests through one ClientSession, ``concurrency`` at once."""
    connector = aiohttp.TCPConnector(limit=concurrency * 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        queue = iter(requests)

        done = 0
        first: float | None = None  # when the first answer was read

        async def worker() -> None:
            nonlocal done, first
            for request in queue:
                async with session.request(
                    request.method,
                    request.url,
                    params=request.params,
                    headers=request.headers,
                    data=request.body,
                ) as response:
                    await response.read()
                    assert response.status == 200
                done += 1
                if first is None:
                    first = time.perf_counter()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        finished = time.perf_counter()
        assert first is not None
        # Timed like the runtime: from the first answer to the last.
        return (len(requests) - 1) / (finished - first)


async def put_on_kafka(settings: Settings, records: list[CallbackRecord]) -> None:
    """The records on the callbacks topic, as the receiver would have put them."""
    bootstrap = settings.kafka.bootstrap_servers
    await ensure_topic({"bootstrap_servers": bootstrap}, settings.kafka.topic, 12)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    futures = [
        await producer.send(settings.kafka.topic, r.to_json(), key=r.partition_key) for r in records
    ]
    await asyncio.gather(*futures)
    await producer.stop()


async def kafka_fed_rate(
    settings: Settings, name: str, records: list[CallbackRecord], expected: int, concurrency: int
) -> float:
    """The reference loop (see the module docstring), timed like the other two."""
    await put_on_kafka(settings, records)
    destination = build_destination(settings, name)
    consumer = AIOKafkaConsumer(
        settings.kafka.topic,
        bootstrap_servers=settings.kafka.bootstrap_servers,
        group_id=f"reference-{settings.kafka.topic}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=concurrency * 32,
    )
    await consumer.start()
    queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=concurrency * 16)
    done = 0
    first: float | None = None
    finished = asyncio.Event()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency * 2))

    async def worker() -> None:
        nonlocal done, first
        while True:
            request = destination.prepare(CallbackRecord.from_json(await queue.get()))
            if not isinstance(request, HttpRequest):
                continue
            outcome = await destination.send(session, request)
            assert isinstance(outcome, Delivered), outcome
            done += 1
            if first is None:
                first = time.perf_counter()
            if done == expected:
                finished.set()

    async def fetch() -> None:
        while True:
            for messages in (await consumer.getmany(timeout_ms=100)).values():
                for message in messages:
                    await queue.put(message.value)

    async def commit() -> None:
        while True:
            await asyncio.sleep(0.5)
            await consumer.commit()

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    tasks += [asyncio.create_task(fetch()), asyncio.create_task(commit())]
    waiter = asyncio.create_task(finished.wait())
    try:
        # A loop that fails (an unexpected answer, a Kafka error) ends the run, not hangs it.
        done_first, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        end = time.perf_counter()
        for task in done_first - {waiter}:
            task.result()
    finally:
        for task in [waiter, *tasks]:
            task.cancel()
        await asyncio.gather(waiter, *tasks, return_exceptions=True)
        await session.close()
        await consumer.stop()
    await delete_topics(settings.kafka.bootstrap_servers, [settings.kafka.topic])
    assert first is not None
    return (expected - 1) / (end - first)


async def runtime_rate(
    settings: Settings, name: str, records: list[CallbackRecord], expected: int
) -> tuple[float, float]:
    """The runtime: records already on Kafka; (deliveries/s, start-up seconds).

    Timed like the bare loop, from the first delivery to the last. Joining the
    consumer group and loading de-dup state come before, once per process; their
    duration is returned apart and printed, with the rate it would give included.
    """
    bootstrap = settings.kafka.bootstrap_servers
    await put_on_kafka(settings, records)
    runtime = DeliveryRuntime(
        settings, build_destination(settings, name), settings.destination(name, HttpDestination)
    )
    await runtime.start()
    labels = {"destination": name}

    def delivered() -> float:
        return (
            runtime.metrics.registry.get_sample_value("postback_hub_delivered_total", labels) or 0
        )

    started = time.perf_counter()
    task = asyncio.create_task(runtime.run())
    first: tuple[float, float] | None = None  # (time, deliveries) when first seen
    while (count := delivered()) < expected:
        if task.done():
            task.result()
        if first is None and count > 0:
            first = (time.perf_counter(), count)
        await asyncio.sleep(0.005)
    finished = time.perf_counter()
    runtime.stop()
    await task
    await runtime.close()
    # Each round's topics would otherwise pile up on the broker and slow later rounds.
    topics = runtime.topics
    await delete_topics(
        bootstrap,
        [
            *topics.consumed,
            topics.dead_letter,
            topics.dedup,
            *(
                runtime.destination.extra_topics()
                if isinstance(runtime.destination, HasTopics)
                else {}
            ),
        ],
    )
    if first is None:  # everything within one poll: too few messages to time
        return expected / (finished - started), 0.0
    return (expected - first[1]) / (finished - first[0]), first[0] - started


async def delete_topics(bootstrap: str, names: list[str]) -> None:
    """Delete and wait until they are gone, so the broker's work on it does not
    overlap the next measurement."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(names)
        for _ in range(300):
            if not set(names) & set(await admin.list_topics()):
                return
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


def sendable(destination: Destination, records: list[CallbackRecord]) -> list[HttpRequest]:
    """The requests the destination sends for ``records``, as the baseline sends them:
    X's signed here, before any timing, so both loops put the same bytes on the wire."""
    requests = [
        r for r in (destination.prepare(record) for record in records) if isinstance(r, HttpRequest)
    ]
    if isinstance(destination, XConversions):
        client = destination.client
        requests = [
            HttpRequest(r.method, r.url, client.sign(r.app, r.method, r.url, r.query))
            for r in map(as_x_request, requests)
        ]
    return requests


async def main(args: argparse.Namespace) -> int:
    with broker(args.bootstrap) as bootstrap, partner_process() as partner_url:
        records = make_records(args.messages)
        tune_gc()  # as the consume command does; applies to both loops
        print(
            f"forwarding benchmark: {args.messages} activities, concurrency {args.concurrency},"
            f" {args.rounds} alternating rounds, medians"
        )
        print(
            f"{'destination':<12} {'bare aiohttp/s':>15} {'runtime/s':>12} {'ratio':>7}  target"
            f"     {'reference/s':>12} {'ratio':>6}"
        )
        for name in args.destination:
            bare_rates: list[float] = []
            runtime_rates: list[float] = []
            reference_rates: list[float] = []
            startups: list[float] = []
            # Both loops get a warm-up (connections, first calls) before measured rounds.
            warm_up = records[: min(2000, len(records))]
            settings = settings_for(
                bootstrap, f"bench-warm-{uuid.uuid4().hex[:8]}", partner_url, args.concurrency
            )
            await runtime_rate(
                settings, name, warm_up, len(sendable(build_destination(settings, name), warm_up))
            )
            for _round in range(args.rounds):
                topic = f"bench-{name}-{uuid.uuid4().hex[:8]}"
                settings = settings_for(bootstrap, topic, partner_url, args.concurrency)
                requests = sendable(build_destination(settings, name), records)
                await bare_loop(requests[: min(2000, len(requests))], args.concurrency)  # warm-up
                bare_rates.append(await bare_loop(requests, args.concurrency))
                reference = settings_for(
                    bootstrap, f"{topic}-reference", partner_url, args.concurrency
                )
                reference_rates.append(
                    await kafka_fed_rate(reference, name, records, len(requests), args.concurrency)
                )
                rate, startup = await runtime_rate(settings, name, records, len(requests))
                runtime_rates.append(rate)
                startups.append(startup)
            bare, ours = statistics.median(bare_rates), statistics.median(runtime_rates)
            floor = statistics.median(reference_rates)
            ratio = ours / bare
            verdict = "ok" if ratio >= TARGET_RATIO else "BELOW"
            print(
                f"{name:<12} {bare:>15.0f} {ours:>12.0f} {ratio:>7.2f}"
                f"  >= {TARGET_RATIO} {verdict:<5} {floor:>12.0f} {floor / bare:>6.2f}"
            )
            print(
                f"{'':<12} rounds: bare {[round(r) for r in bare_rates]},"
                f" runtime {[round(r) for r in runtime_rates]},"
                f" reference {[round(r) for r in reference_rates]}"
            )
            with_startup = [
                len(requests) / (len(requests) / rate + startup)
                for rate, startup in zip(runtime_rates, startups, strict=True)
            ]
            print(
                f"{'':<12} runtime start-up before the first delivery (group join, de-dup"
                f" restore): {[round(s, 2) for s in startups]} s; rates with it included:"
                f" {[round(r) for r in with_startup]}"
            )
        print(
            "reference: an aiokafka-fed loop with no per-device order, de-dup, retries or"
            " metrics (see the module docstring)"
        )
        return 0


def cli() -> None:
    quiet_kafka_logs()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    parser.add_argument("--destination", nargs="+", default=["module", "x"])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    raise SystemExit(uvloop.run(main(args)))


if __name__ == "__main__":
    cli()
