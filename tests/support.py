"""Helpers shared by the integration tests: settings, reading topics back, processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from service import topics
from service.localkafka import free_port
from service.settings import Settings, parse_settings

SECRET = "t0p-s3cret-for-tests"
SECRET_ENV = "POSTBACK_HUB_TEST_SECRET"
REPO = Path(__file__).resolve().parents[1]


def settings_document(
    bootstrap_servers: str,
    topic: str,
    port: int = 0,
    *,
    produce_timeout_s: float = 3.0,
    apps: dict[str, Any] | None = None,
    receiver: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "kafka": {
            "bootstrap_servers": bootstrap_servers,
            "topic": topic,
            "create_topic": False,
            "produce_timeout_s": produce_timeout_s,
        },
        "receiver": {"host": "127.0.0.1", "port": port, "workers": 1, **(receiver or {})},
        "logging": {"level": "DEBUG"},
        "apps": apps
        or {
            "demo": {
                "secret": {"env": SECRET_ENV},
                "aliases": {"adjust_tracker": "tracker"},
            },
            "locked": {"secret": {"env": SECRET_ENV}, "allow_cidrs": ["203.0.113.0/24"]},
        },
    }


def make_settings(bootstrap_servers: str, topic: str, port: int, **kwargs: Any) -> Settings:
    os.environ.setdefault(SECRET_ENV, SECRET)
    return parse_settings(settings_document(bootstrap_servers, topic, port, **kwargs))


def toml_value(item: Any) -> str:
    """TOML for the values our settings documents use (inline tables throughout)."""
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, int | float):
        return repr(item)
    if isinstance(item, str):
        return '"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(item, list):
        return "[" + ", ".join(toml_value(x) for x in item) + "]"
    if isinstance(item, dict):
        return "{" + ", ".join(f'"{k}" = {toml_value(v)}' for k, v in item.items()) + "}"
    raise TypeError(f"no TOML for {type(item).__name__}")


def write_config(path: Path, document: dict[str, Any]) -> Path:
    path.write_text("".join(f"{key} = {toml_value(value)}\n" for key, value in document.items()))
    return path


async def partitions_of(bootstrap_servers: str, topic: str) -> list[int]:
    return await topics.partitions_of({"bootstrap_servers": bootstrap_servers}, topic)


async def read_records(
    bootstrap_servers: str, topic: str, expected: int, timeout: float = 20.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read the topic from the beginning until ``expected`` records (or time runs out)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        partitions = await partitions_of(bootstrap_servers, topic)
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        records: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for items in batch.values():
                records.extend(items)
        if not partitions:
            raise LookupError(f"topic {topic} does not exist")
        return records
    finally:
        await consumer.stop()


async def topic_size(bootstrap_servers: str, topic: str) -> int:
    """How many records were ever written to the topic (sum of end offsets)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [
            TopicPartition(topic, p) for p in await partitions_of(bootstrap_servers, topic)
        ]
        ends = await consumer.end_offsets(partitions)
        return sum(ends.values())
    finally:
        await consumer.stop()


async def wait_http_ok(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer 200 within {timeout}s")
            await asyncio.sleep(0.1)


@contextmanager
def receiver_process(
    config: Path, log_path: Path, workers: int = 1
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``postback-hub serve`` as a real process; stderr (the JSON log) goes to log_path."""
    env = {**os.environ, SECRET_ENV: SECRET}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "service",
                "serve",
                "--config",
                str(config),
                "--workers",
                str(workers),
            ],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


__all__ = [
    "SECRET",
    "SECRET_ENV",
    "free_port",
    "make_settings",
    "read_records",
    "receiver_process",
    "settings_document",
    "topic_size",
    "wait_http_ok",
    "write_config",
]
