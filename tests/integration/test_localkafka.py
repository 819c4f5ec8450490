"""The local broker itself: topics, acks=all round trip, crash durability, CLI status."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from postback_hub.service.localkafka import LocalKafka, free_port, register_cli
from postback_hub.service.topics import ensure_topic

if TYPE_CHECKING:
    # Only the fixture's type: importing conftest at run time would load it twice.
    from tests.conftest import MakeBroker

pytestmark = pytest.mark.integration


# ---------------------------------------------------------------------------- helpers


async def produce(bootstrap_servers: str, topic: str, value: bytes, partition: int) -> int:
    """Send one record with acks=all; return its offset."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
    await producer.start()
    try:
        metadata = await producer.send_and_wait(topic, value, partition=partition)
    finally:
        await producer.stop()
    offset: int = metadata.offset
    return offset


async def read_one(bootstrap_servers: str, topic: str, partition: int, offset: int) -> bytes:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        record = await asyncio.wait_for(consumer.getone(), timeout=15)
    finally:
        await consumer.stop()
    value: bytes = record.value
    return value


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="postback-hub")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    code: int = args.func(args)
    return code


# ------------------------------------------------------------------------------ tests


async def test_topic_round_trip_with_acks_all(kafka_broker: LocalKafka, topic: str) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    # Every partition must take writes right after the fixture created the topic.
    for partition in range(3):
        value = f"hello {partition}".encode()
        offset = await produce(bootstrap, topic, value, partition)
        assert await read_one(bootstrap, topic, partition, offset) == value


async def test_create_topic_is_idempotent(kafka_broker: LocalKafka, topic: str) -> None:
    await ensure_topic({"bootstrap_servers": kafka_broker.bootstrap_servers}, topic, 3)
    # An existing topic keeps its partitions, whatever count the second call asks for.
    await ensure_topic({"bootstrap_servers": kafka_broker.bootstrap_servers}, topic, 1)
    offset = await produce(kafka_broker.bootstrap_servers, topic, b"still here", 2)
    assert await read_one(kafka_broker.bootstrap_servers, topic, 2, offset) == b"still here"


def test_handle_from_data_dir_sees_the_running_broker(kafka_broker: LocalKafka) -> None:
    handle = LocalKafka.from_data_dir(kafka_broker.data_dir)
    assert handle.bootstrap_servers == kafka_broker.bootstrap_servers
    assert handle.pid == kafka_broker.pid is not None
    pid = kafka_broker.pid
    handle.start(timeout=10)  # already running: must adopt it, not spawn a second JVM
    assert kafka_broker.pid == pid
    assert handle.is_ready()


async def test_kill_then_start_keeps_acknowledged_records(make_broker: MakeBroker) -> None:
    broker = make_broker()
    bootstrap = broker.bootstrap_servers
    await ensure_topic({"bootstrap_servers": bootstrap}, "durable", 1)
    offset = await produce(bootstrap, "durable", b"acked before the crash", 0)
    first_pid = broker.pid

    broker.kill()
    assert not broker.is_running()
    assert not broker.is_ready(timeout=0.5)

    broker.start()
    assert broker.bootstrap_servers == bootstrap
    assert broker.pid not in (None, first_pid)
    assert await read_one(bootstrap, "durable", 0, offset) == b"acked before the crash"

    # Another process would only have the data dir; stop the broker through that.
    LocalKafka.from_data_dir(broker.data_dir).stop()
    assert not broker.is_running()
    assert not broker.pid_path.exists()
    assert run_cli("kafka", "status", "--data-dir", str(broker.data_dir)) == 1


def test_status_cli_reports_ready_broker(
    kafka_broker: LocalKafka, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("kafka", "status", "--data-dir", str(kafka_broker.data_dir)) == 0
    status = json.loads(capsys.readouterr().out)
    assert status == {
        "running": True,
        "ready": True,
        "bootstrap_servers": kafka_broker.bootstrap_servers,
        "pid": kafka_broker.pid,
        "data_dir": str(kafka_broker.data_dir),
    }


def test_status_cli_without_broker(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    argv = ["kafka", "status", "--data-dir", str(tmp_path), "--port", str(port)]
    assert run_cli(*argv) == 1
    status = json.loads(capsys.readouterr().out)
    assert status["running"] is False
    assert status["ready"] is False
    assert status["pid"] is None


def test_up_refuses_a_port_in_use(
    kafka_broker: LocalKafka, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["kafka", "up", "--data-dir", str(tmp_path), "--port", str(kafka_broker.port)]
    assert run_cli(*argv) == 1
    assert "already in use" in capsys.readouterr().err
    assert not LocalKafka(tmp_path, port=kafka_broker.port).is_running()


def test_the_data_directory_is_readable_by_its_owner_only(kafka_broker: LocalKafka) -> None:
    # It holds every callback (device ids, IPs) and the dead letters' partner answers.
    mode = kafka_broker.data_dir.stat().st_mode & 0o777
    assert mode == 0o700
    for path in kafka_broker.data_dir.rglob("*"):
        assert path.stat().st_mode & 0o077 == 0, path
