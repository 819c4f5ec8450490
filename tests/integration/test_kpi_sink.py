"""The KPI sink end to end against the real broker and real databases: what it counts
equals what the test sent, across a SIGKILL mid-batch, a replay from the earliest
offset and Adjust's duplicates."""

from __future__ import annotations

import asyncio
import random
import signal
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from postback_hub.consumers.kpi import build_sink
from postback_hub.kpi.store import KpiStore
from postback_hub.service.localkafka import LocalKafka
from postback_hub.service.record import CallbackRecord
from tests.kpi_support import kpi_document, kpi_settings, spawn_sink, stored_offsets
from tests.support import (
    callback_record,
    committed_offsets,
    eventually,
    produce_records,
    write_config,
)

pytestmark = pytest.mark.integration

T0 = 1_700_006_400  # 2023-11-15T00:00:00Z


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/kpi.sqlite3"
    url: str = request.getfixturevalue("postgres_url")
    return url


Totals = dict[tuple[str, str, str], tuple[int, Decimal]]


def _totals(database_url: str) -> Totals:
    """(environment, kind, country) -> (count, revenue), read back from the store."""
    store = KpiStore.open(database_url)
    try:
        totals: dict[tuple[str, str, str], tuple[int, Decimal]] = {}
        for environment in ("production", "sandbox"):
            rows = store.aggregate(
                app="demo",
                environment=environment,
                start_bucket=0,
                end_bucket=2**40,
                filters={},
                group=["country"],
            )
            for row in rows:
                key = (environment, row.activity_kind, str(row.group[0]))
                count, revenue = totals.get(key, (0, Decimal(0)))
                totals[key] = (count + row.count, revenue + row.revenue)
        return totals
    finally:
        store.close()


class Sent:
    """What a test sent, counted independently of the code under test."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str, str]] = Counter()
        self.revenue: dict[tuple[str, str, str], Decimal] = {}

    def add(self, environment: str, kind: str, country: str, revenue: Decimal) -> None:
        key = (environment, kind, country)
        self.counts[key] += 1
        self.revenue[key] = self.revenue.get(key, Decimal(0)) + revenue

    def expected(self) -> Totals:
        return {key: (n, self.revenue[key]) for key, n in self.counts.items()}


def _records(n: int, first_device: int, sent: Sent, seed: int) -> list[CallbackRecord]:
    rng = random.Random(seed)
    records = []
    for i in range(n):
        kind = rng.choice(["install", "session", "event"])
        country = rng.choice(["de", "gb", "in"])
        environment = "sandbox" if i % 10 == 0 else "production"
        fields = {"country": country, "environment": environment, "tracker_name": "Net::C"}
        revenue = Decimal(0)
        if kind == "event":
            cents = rng.randint(1, 5000)
            fields |= {"event": "tok_buy", "revenue": str(cents), "currency": "USD"}
            revenue = Decimal(cents) / 100
        records.append(callback_record(first_device + i, T0 + i, kind, **fields))
        sent.add(environment, kind, country, revenue)
    return records


async def _end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        if not parts:
            parts = [TopicPartition(topic, p) for p in range(3)]
        ends = await consumer.end_offsets(parts)
        return {tp.partition: offset for tp, offset in ends.items() if offset > 0}
    finally:
        await consumer.stop()


async def _all_written(database_url: str, bootstrap: str, topic: str) -> None:
    ends = await _end_offsets(bootstrap, topic)
    stored: dict[int, int] = {}

    async def all_stored() -> bool:
        nonlocal stored
        stored = await asyncio.to_thread(stored_offsets, database_url, "kpi", topic)
        return stored == ends

    await eventually(
        all_stored,
        90,
        interval=0.1,
        what=lambda: f"the store holding the end offsets {ends} (it holds {stored})",
    )


async def test_the_sink_counts_what_was_sent_and_a_duplicate_once(
    kafka_broker: LocalKafka, topic: str, database_url: str
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    sent = Sent()
    records = _records(400, 1, sent, seed=3)
    # Adjust retries two of them: the same activities again, counted once.
    await produce_records(bootstrap, topic, [*records, records[5], records[17]])
    settings = kpi_settings(bootstrap, topic, database_url, batch_size=50)
    sink = build_sink(settings, "kpi")
    await sink.start()
    runner = asyncio.create_task(sink.run())
    try:
        await _all_written(database_url, bootstrap, topic)
        assert _totals(database_url) == sent.expected()
        duplicates = sink.metrics.registry.get_sample_value(
            "postback_hub_kpi_duplicates_total", {"destination": "kpi"}
        )
        assert duplicates == 2
        # Kafka's committed offsets follow, for lag tools.
        ends = await _end_offsets(bootstrap, topic)
        committed = await committed_offsets(bootstrap, "postback-hub.kpi")
        assert {p: o for (t, p), o in committed.items() if t == topic} == ends
    finally:
        sink.stop()
        await runner
        await sink.close(5.0)


async def test_sigkill_mid_batch_and_a_replay_from_earliest_change_nothing(
    kafka_broker: LocalKafka, topic: str, database_url: str, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    sent = Sent()
    records = _records(6000, 10_000, sent, seed=4)
    await produce_records(bootstrap, topic, records)
    document = kpi_document(bootstrap, topic, database_url, batch_size=100)
    document["logging"] = {"level": "WARNING"}
    config = write_config(tmp_path / "config.toml", document)
    log_path = tmp_path / "sink.log"
    with log_path.open("ab") as log:
        process = spawn_sink(config, "kpi", log)
        done = 0
        try:

            async def some_stored() -> bool:
                nonlocal done
                stored = await asyncio.to_thread(stored_offsets, database_url, "kpi", topic)
                done = sum(stored.values())
                return done >= 300

            # Killed while batches are being written: some are stored, most are not.
            await eventually(
                some_stored,
                60,
                interval=0.02,
                what=lambda: f"300 records stored (so far {done})",
            )
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert done < len(records), "the sink finished before it was killed"

        process = spawn_sink(config, "kpi", log)
        try:
            await _all_written(database_url, bootstrap, topic)
            assert _totals(database_url) == sent.expected()
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)

        # A replay from the earliest offset: Kafka's committed offsets go back to 0.
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id="postback-hub.kpi", enable_auto_commit=False
        )
        await consumer.start()
        try:
            parts = [TopicPartition(topic, p) for p in (await _end_offsets(bootstrap, topic))]
            consumer.assign(parts)
            await consumer.commit({tp: OffsetAndMetadata(0, "") for tp in parts})
        finally:
            await consumer.stop()
        # One more callback after the replay: once it is counted, the sink has read past
        # every replayed message.
        extra = _records(1, 90_000, sent, seed=5)
        await produce_records(bootstrap, topic, extra)
        process = spawn_sink(config, "kpi", log)
        try:
            await _all_written(database_url, bootstrap, topic)
            assert _totals(database_url) == sent.expected()
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
