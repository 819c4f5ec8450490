"""Helpers shared by the integration tests: settings, reading topics back, processes."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import aiohttp
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord

from postback_hub.consumers.module.config import ModuleDestination
from postback_hub.consumers.module.partner import ModulePartner
from postback_hub.consumers.registry import Registry, parse_settings
from postback_hub.consumers.x.config import XDestination
from postback_hub.consumers.x.destination import XConversions
from postback_hub.service import topics
from postback_hub.service.localkafka import free_port
from postback_hub.service.normalise import normalise
from postback_hub.service.record import CallbackRecord
from postback_hub.service.settings import Settings

SECRET = "t0p-s3cret-for-tests"
SECRET_ENV = "POSTBACK_HUB_TEST_SECRET"
REPO = Path(__file__).resolve().parents[1]


# For settings that never reach a broker (unit tests, commands that do not produce).
NO_BROKER = "127.0.0.1:1"


def settings_document(
    bootstrap_servers: str,
    topic: str,
    port: int = 0,
    *,
    produce_timeout_s: float = 3.0,
    apps: dict[str, Any] | None = None,
    receiver: dict[str, Any] | None = None,
    kafka: dict[str, Any] | None = None,
    destinations: dict[str, Any] | None = None,
    **sections: Any,
) -> dict[str, Any]:
    """The tests' one settings document: ``kafka`` and ``receiver`` keys are merged over
    the defaults, ``destinations`` and any other top-level ``sections`` (``kpi``,
    ``logging``, ...) are set as given."""
    document: dict[str, Any] = {
        "kafka": {
            "bootstrap_servers": bootstrap_servers,
            "topic": topic,
            "create_topic": False,
            "produce_timeout_s": produce_timeout_s,
            **(kafka or {}),
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
    if destinations:
        document["destinations"] = destinations
    document.update(sections)
    return document


PARTNER_ENV = "POSTBACK_HUB_TEST_PARTNER"
PARTNER_ID = "partner-1"


def make_settings(
    bootstrap_servers: str,
    topic: str,
    port: int,
    destinations: dict[str, Any] | None = None,
    registry: Registry | None = None,
    **kwargs: Any,
) -> Settings:
    """``settings_document(...)`` parsed (with ``registry`` for destination types beyond the
    shipped ones), the test secrets set in the environment."""
    os.environ.setdefault(SECRET_ENV, SECRET)
    os.environ.setdefault(PARTNER_ENV, PARTNER_ID)
    document = settings_document(
        bootstrap_servers, topic, port, destinations=destinations, **kwargs
    )
    return parse_settings(document, registry=registry)


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
        if not partitions:
            raise LookupError(f"topic {topic} does not exist")
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        records: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for items in batch.values():
                records.extend(items)
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


async def eventually(
    predicate: Callable[[], object],
    timeout: float = 30.0,
    *,
    interval: float = 0.05,
    what: str | Callable[[], str] = "the condition",
) -> None:
    """Wait until ``predicate()`` is true (an async predicate is awaited), or fail saying
    ``what`` did not happen within ``timeout`` seconds (a callable ``what`` is asked at
    the failure, to say how far it got). The one polling loop of the tests: for things
    that cannot be awaited directly (a counter, a file, another process)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{_said(what)} did not happen within {timeout} s")
        await asyncio.sleep(interval)


def eventually_sync(
    predicate: Callable[[], object],
    timeout: float = 30.0,
    *,
    interval: float = 0.05,
    what: str | Callable[[], str] = "the condition",
) -> None:
    """``eventually`` for code without an event loop (a fixture starting a server process)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{_said(what)} did not happen within {timeout} s")
        time.sleep(interval)


def _said(what: str | Callable[[], str]) -> str:
    return what if isinstance(what, str) else what()


async def wait_http_ok(url: str, timeout: float = 30.0) -> None:
    """Wait until ``url`` answers 200 (connection errors count as not yet)."""
    async with aiohttp.ClientSession() as session:

        async def answers_ok() -> bool:
            try:
                async with session.get(url) as response:
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(answers_ok, timeout, interval=0.1, what=f"a 200 from {url}")


def spawn_postback_hub(args: list[str], config: Path, log: IO[bytes]) -> subprocess.Popen[bytes]:
    """``postback-hub ARGS --config CONFIG`` as a real process, with the test secrets set;
    its output (the JSON log) goes to ``log``."""
    env = {**X_ENV, **os.environ, SECRET_ENV: SECRET, PARTNER_ENV: PARTNER_ID}
    command = [sys.executable, "-m", "postback_hub", *args, "--config", str(config)]
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)


@contextmanager
def postback_hub_process(
    args: list[str], config: Path, log_path: Path, *, append: bool = False
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``postback-hub ARGS`` as a real process, killed on exit; its JSON log goes to
    log_path (appended to with ``append``, for a process restarted in one test)."""
    with log_path.open("ab" if append else "wb") as log_file:
        process = spawn_postback_hub(args, config, log_file)
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def receiver_process(
    config: Path, log_path: Path, workers: int = 1, command: str = "serve"
) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    """``postback-hub serve`` (or ``run``) as a real process."""
    return postback_hub_process([command, "--workers", str(workers)], config, log_path)


async def serve_locally(app: web.Application) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on a free loopback port (the tests' fake partners)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


def module_destination(
    partner_url: str, app: dict[str, Any] | None = None, **overrides: Any
) -> dict[str, Any]:
    """A module-partner destination aimed at a FakePartner, with fast retry settings."""
    destination: dict[str, Any] = {
        "type": "module",
        "concurrency": 16,
        "request_timeout_s": 2.0,
        "retry": {
            "attempts": 50,
            "in_process_s": 10.0,
            "backoff_initial_s": 0.05,
            "backoff_max_s": 0.2,
            "park_delays_s": [1.0, 2.0],
        },
        "breaker": {"failure_threshold": 1000, "open_s": 0.5},
        "template": {
            "url": partner_url + "/pb/{credential}",
            "sandbox_url": partner_url + "/pb/sandbox-{credential}",
            "params": {
                "activity_kind": "{activity_kind}",
                "adid": "{adid}",
                "created_at": "{created_at_milli}",
                "event": "{partner_event_name}",
                "revenue": "{revenue}",
                "fp": "{fingerprint}",
            },
        },
        "apps": {
            "demo": {
                "credential": {"env": "POSTBACK_HUB_TEST_PARTNER"},
                "event_links": {"tok_buy": "purchase"},
                **(app or {}),
            }
        },
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(destination.get(key), dict):
            destination[key] = {**destination[key], **value}
        else:
            destination[key] = value
    return destination


def callback_record(
    adid_number: int, created_at_s: int, kind: str = "install", **fields: str
) -> CallbackRecord:
    pairs = [
        ("activity_kind", kind),
        ("adid", f"{adid_number:032x}"),
        ("created_at", str(created_at_s)),
        *fields.items(),
    ]
    return normalise(
        pairs,
        app="demo",
        aliases={},
        default_environment="production",
        received_at_millis=time.time_ns() // 1_000_000,
    )


async def produce_records(
    bootstrap_servers: str, topic: str, records: list[CallbackRecord]
) -> list[tuple[int, int]]:
    """Put records on the callbacks topic as the receiver would; (partition, offset) each."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value=r.to_json(), key=r.partition_key) for r in records
        ]
        results = [await f for f in futures]
        return [(m.partition, m.offset) for m in results]
    finally:
        await producer.stop()


async def committed_offsets(bootstrap_servers: str, group: str) -> dict[tuple[str, int], int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}
    finally:
        await admin.close()


X_KEY_B64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
X_ENV = {
    "XT_CONSUMER_KEY": "ck-test",
    "XT_CONSUMER_SECRET": "cs-test",
    "XT_ACCESS_TOKEN": "at-test",
    "XT_ACCESS_TOKEN_SECRET": "ats-test",
    "XT_HMAC_KEY": X_KEY_B64,
}


def x_destination(
    x_url: str, app: dict[str, Any] | None = None, **overrides: Any
) -> dict[str, Any]:
    """An X destination aimed at a FakeX, with fast retry settings."""
    for name, value in X_ENV.items():
        os.environ.setdefault(name, value)
    destination: dict[str, Any] = {
        "type": "x",
        "base_url": x_url,
        "concurrency": 8,
        "request_timeout_s": 2.0,
        "auth_failure_cooldown_s": 60.0,
        "retry": {
            "attempts": 50,
            "in_process_s": 20.0,
            "backoff_initial_s": 0.05,
            "backoff_max_s": 0.2,
            "park_delays_s": [1.0, 2.0],
        },
        "apps": {
            "demo": {
                "app_id": "333903271",
                "os_type": "IOS",
                "consumer_key": {"env": "XT_CONSUMER_KEY"},
                "consumer_secret": {"env": "XT_CONSUMER_SECRET"},
                "access_token": {"env": "XT_ACCESS_TOKEN"},
                "access_token_secret": {"env": "XT_ACCESS_TOKEN_SECRET"},
                "hmac_key": {"env": "XT_HMAC_KEY"},
                "event_conversions": {"tok_buy": "PURCHASE"},
                **(app or {}),
            }
        },
    }
    destination.update(overrides)
    return destination


def ios_record(
    device: int, created_at_s: int, kind: str = "install", **fields: str
) -> CallbackRecord:
    idfa = f"{device:08X}-8246-4BA4-AE5B-76104861E7DC"
    return callback_record(device, created_at_s, kind, idfa=idfa, **fields)


def x_conversions(settings: Settings, name: str = "x", **kwargs: Any) -> XConversions:
    """The X destination ``[destinations.NAME]`` of ``settings``."""
    config = settings.destination(name, XDestination)
    return XConversions(name, config, settings.kafka.topic, **kwargs)


def module_partner(settings: Settings, name: str = "bia") -> ModulePartner:
    """The module partner ``[destinations.NAME]`` of ``settings``."""
    return ModulePartner(name, settings.destination(name, ModuleDestination))
