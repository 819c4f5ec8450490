"""Fault scenarios against the whole pipeline (real broker, real processes).

Short versions run by default; POSTBACK_HUB_SOAK=1 runs the long ones (minutes).
"""

from __future__ import annotations

import asyncio
import signal
import statistics
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from postback_hub.service.localkafka import LocalKafka, free_port
from tests.fake_partner import FakePartner
from tests.fake_x import FakeX
from tests.faults.harness import (
    MODULE_CONCURRENCY,
    MODULE_UNACKNOWLEDGED_MARKS,
    SOAK,
    AdjustLoad,
    Pipeline,
    check_invariants,
    delivered_everywhere,
    summary,
    x_latencies,
)
from tests.faults.proxy import TcpProxy
from tests.figures import RecordFigures
from tests.support import callback_record, eventually, produce_records, read_records

pytestmark = [pytest.mark.integration, pytest.mark.fault]

LOAD_S = 60.0 if SOAK else 12.0
RATE = 60.0


@pytest.fixture
async def pipeline(
    tmp_path: Path, make_broker: Callable[[], LocalKafka]
) -> AsyncIterator[Pipeline]:
    partner = await FakePartner().start()
    fake_x = await FakeX().start()
    running = Pipeline(make_broker(), "callbacks", tmp_path, partner, fake_x)
    running.start()
    await running.ready()
    try:
        yield running
    finally:
        running.stop()
        await partner.stop()
        await fake_x.stop()


async def test_broker_sigkill_under_load_then_restart(
    pipeline: Pipeline, record_figures: RecordFigures
) -> None:
    load = AdjustLoad(pipeline.url, RATE)

    async def fault() -> None:
        await asyncio.sleep(LOAD_S / 3)
        await asyncio.to_thread(pipeline.broker.kill)
        await asyncio.sleep(10)  # about ten seconds without a broker
        await asyncio.to_thread(pipeline.broker.start)

    await asyncio.gather(load.run(LOAD_S), fault())
    await delivered_everywhere(pipeline, load)
    figures = await summary("broker SIGKILL", pipeline, load, record_figures)
    check_invariants(figures, pipeline, load)
    assert load.statuses[503] > 0  # the outage was seen, and answered as retryable
    assert figures["given_up"] == 0  # Adjust's retries carried every callback through


async def test_receiver_sigterm_then_sigkill_under_load(
    pipeline: Pipeline, record_figures: RecordFigures
) -> None:
    load = AdjustLoad(pipeline.url, RATE)

    async def fault() -> None:
        await asyncio.sleep(LOAD_S / 4)
        await asyncio.to_thread(pipeline.signal_receiver, signal.SIGTERM)  # graceful
        pipeline.start_receiver()
        await pipeline.ready()
        await asyncio.sleep(LOAD_S / 4)
        await asyncio.to_thread(pipeline.signal_receiver, signal.SIGKILL)
        pipeline.start_receiver()
        await pipeline.ready()

    await asyncio.gather(load.run(LOAD_S), fault())
    # Every 200, including those answered just before the kill, is on Kafka.
    records = await read_records(
        pipeline.broker.bootstrap_servers, pipeline.topic, len(load.acknowledged)
    )
    import orjson

    stored = {orjson.loads(r.value)["fingerprint"] for r in records}
    assert set(load.acknowledged.values()) <= stored
    await delivered_everywhere(pipeline, load)
    figures = await summary("receiver SIGTERM + SIGKILL", pipeline, load, record_figures)
    check_invariants(figures, pipeline, load)


async def test_each_consumer_sigkilled_mid_stream_and_restarted(
    pipeline: Pipeline, record_figures: RecordFigures
) -> None:
    load = AdjustLoad(pipeline.url, RATE)
    pipeline.partner.delay_s = 0.01
    pipeline.fake_x.delay_s = 0.01

    async def fault() -> None:
        for name in ("bia", "x"):
            await asyncio.sleep(LOAD_S / 3)
            await asyncio.to_thread(pipeline.kill_consumer, name)
            pipeline.start_consumer(name)

    await asyncio.gather(load.run(LOAD_S), fault())
    await delivered_everywhere(pipeline, load)
    figures = await summary("consumers SIGKILL", pipeline, load, record_figures)
    check_invariants(figures, pipeline, load)


async def test_module_consumer_sigkilled_while_catching_up(
    pipeline: Pipeline, record_figures: RecordFigures
) -> None:
    """A backlog (the consumer was down), then a SIGKILL in the middle of catching up at
    full speed: the partner receives everything, and at most the deliveries whose de-dup
    marks were unacknowledged (max_unacknowledged_marks + concurrency) twice."""
    backlog = 6_000 if SOAK else 3_000
    await asyncio.to_thread(pipeline.kill_consumer, "bia")
    records = [callback_record(device, 1_700_000_000) for device in range(1, backlog + 1)]
    await produce_records(pipeline.broker.bootstrap_servers, pipeline.topic, records)
    pipeline.start_consumer("bia")
    await eventually(
        lambda: len(pipeline.partner.received) >= backlog // 3,
        timeout=120,
        interval=0.01,
        what="a third of the backlog delivered",
    )
    at_kill = len(pipeline.partner.received)
    await asyncio.to_thread(pipeline.kill_consumer, "bia")
    pipeline.start_consumer("bia")
    wanted = {r.fingerprint for r in records}
    await eventually(
        lambda: wanted <= set(pipeline.partner.fingerprints()),
        timeout=180,
        interval=0.2,
        what="the whole backlog delivered",
    )
    received = pipeline.partner.fingerprints()
    duplicates = len(received) - len(set(received))
    bound = MODULE_UNACKNOWLEDGED_MARKS + MODULE_CONCURRENCY
    record_figures(
        "module consumer SIGKILL during catch-up",
        {
            "backlog": backlog,
            "delivered_at_kill": at_kill,
            "delivered": len(set(received)),
            "duplicates_partner": duplicates,
            "bound": bound,
        },
    )
    assert duplicates <= bound


@pytest.mark.parametrize("trouble", ["down", "slow"])
async def test_one_partners_trouble_does_not_touch_the_other_destination(
    pipeline: Pipeline, trouble: str, record_figures: RecordFigures
) -> None:
    """down: the module partner answers 503, then times out, then recovers.
    slow: it answers every request in one second. Either way X keeps its pace."""
    load = AdjustLoad(pipeline.url, RATE)
    window: dict[str, float] = {}

    async def fault() -> None:
        await asyncio.sleep(LOAD_S / 4)
        window["start"] = time.monotonic()
        if trouble == "down":
            pipeline.partner.fail_status = 503
            await asyncio.sleep(LOAD_S / 4)
            pipeline.partner.fail_status = None
            pipeline.partner.delay_s = 5.0  # past the destination's 2 s timeout
            await asyncio.sleep(LOAD_S / 4)
        else:
            pipeline.partner.delay_s = 1.0
            await asyncio.sleep(LOAD_S / 2)
        pipeline.partner.delay_s = 0.0
        window["end"] = time.monotonic()

    await asyncio.gather(load.run(LOAD_S), fault())
    await delivered_everywhere(pipeline, load, timeout=120)
    figures = await summary(f"module partner {trouble}", pipeline, load, record_figures)
    check_invariants(figures, pipeline, load)
    latencies = x_latencies(pipeline, load)
    before = [lat for acked, lat in latencies if acked < window["start"]]
    during = [lat for acked, lat in latencies if window["start"] <= acked < window["end"]]
    baseline, degraded = statistics.median(before), statistics.median(during)
    x_rate_before = len(before) / (window["start"] - min(acked for acked, _ in latencies))
    x_rate_during = len(during) / (window["end"] - window["start"])
    record_figures(
        f"module partner {trouble}: X alongside",
        {
            "x_latency_p50_ms_before": round(baseline * 1000),
            "x_latency_p50_ms_during": round(degraded * 1000),
            "x_per_s_before": round(x_rate_before),
            "x_per_s_during": round(x_rate_during),
        },
    )
    # X's throughput follows the offered load, unaffected by the other partner.
    assert x_rate_during >= 0.8 * RATE
    assert degraded <= max(2 * baseline, 0.25)


@pytest.fixture
async def proxied_pipeline(tmp_path: Path) -> AsyncIterator[tuple[Pipeline, TcpProxy]]:
    """The pipeline reaching the broker only through a proxy the test controls."""
    kafka_port, proxy_port = free_port(), free_port()
    proxy = await TcpProxy(proxy_port, kafka_port).start()
    broker = LocalKafka(
        tmp_path / "kafka",
        port=kafka_port,
        controller_port=free_port(),
        heap_mb=256,
        advertised_port=proxy_port,
    )
    await asyncio.to_thread(broker.start)
    partner = await FakePartner().start()
    fake_x = await FakeX().start()
    running = Pipeline(broker, "callbacks", tmp_path, partner, fake_x)
    running.start()
    await running.ready()
    try:
        yield running, proxy
    finally:
        running.stop()
        await partner.stop()
        await fake_x.stop()
        await asyncio.to_thread(broker.stop)
        await proxy.stop()


async def test_broker_alive_but_unreachable_cut_then_delayed(
    proxied_pipeline: tuple[Pipeline, TcpProxy], record_figures: RecordFigures
) -> None:
    pipeline, proxy = proxied_pipeline
    load = AdjustLoad(pipeline.url, RATE)

    async def fault() -> None:
        await asyncio.sleep(LOAD_S / 4)
        proxy.cut_all()  # every connection to the broker dropped, new ones refused
        await asyncio.sleep(LOAD_S / 4)
        proxy.restore()
        await asyncio.sleep(LOAD_S / 8)
        proxy.delay_s = 1.5  # each chunk held back: acks arrive after the 2 s bound
        await asyncio.sleep(LOAD_S / 4)
        proxy.restore()

    await asyncio.gather(load.run(LOAD_S), fault())
    await delivered_everywhere(pipeline, load, timeout=120)
    figures = await summary("broker unreachable (cut, delay)", pipeline, load, record_figures)
    check_invariants(figures, pipeline, load)
    assert load.statuses[503] > 0
