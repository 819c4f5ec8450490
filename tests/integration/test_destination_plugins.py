"""Destination types are plugins: a type defined here, registered here, runs end to end
against the real broker without touching the runtime or the settings modules. And the
dead-letter limit stops a consumer whose every message fails, committing nothing past
the letter that crossed it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Literal

import aiohttp
import pytest

from postback_hub.consumers.config import HttpDestination
from postback_hub.consumers.delivery import (
    HttpRequest,
    Outcome,
    Retry,
    Skip,
    classify_http,
    send_http,
)
from postback_hub.consumers.registry import (
    Consumer,
    Registry,
    default_registry,
    http_type,
    parse_settings,
)
from postback_hub.consumers.runtime import DeliveryRuntime
from postback_hub.consumers.runtime.settle import DeadLetterLimitReached
from postback_hub.service.localkafka import LocalKafka
from postback_hub.service.record import CallbackRecord
from postback_hub.service.settings import ConfigError, Settings
from tests.fake_partner import FakePartner
from tests.support import (
    PARTNER_ID,
    callback_record,
    committed_offsets,
    eventually,
    make_settings,
    module_destination,
    produce_records,
    topic_size,
)

pytestmark = pytest.mark.integration


class EchoConfig(HttpDestination):
    """A destination type the product does not ship."""

    type: Literal["echo"]
    url: str
    only_kind: str = "install"


class Echo:
    """Sends each install to the fake partner's module endpoint, with the fake's required
    parameters, and nothing else."""

    def __init__(self, name: str, config: EchoConfig) -> None:
        self.name = name
        self._config = config

    def prepare(self, record: CallbackRecord) -> HttpRequest | Skip:
        if record.activity_kind != self._config.only_kind:
            return Skip("not_an_install")
        params = {
            "activity_kind": record.activity_kind,
            "adid": record.device.get("adid", ""),
            "created_at": record.created_at,
            "fingerprint": record.fingerprint,
        }
        return HttpRequest("GET", f"{self._config.url}/pb/{PARTNER_ID}", {}, None, params)

    async def send(self, session: aiohttp.ClientSession, request: HttpRequest) -> Outcome:
        answer = await send_http(session, request, self._config.request_timeout_s)
        if isinstance(answer, Retry):
            return answer
        return classify_http(answer.status, answer.headers, answer.body)


def _echo(settings: Settings, name: str) -> Echo:
    return Echo(name, settings.destination(name, EchoConfig))


ECHO = http_type("echo", EchoConfig, _echo)


@contextlib.asynccontextmanager
async def _running(
    registry: Registry, settings: Settings, name: str
) -> AsyncIterator[tuple[Consumer, asyncio.Task[None]]]:
    runtime = registry.build(settings, name)
    await runtime.start()
    task = asyncio.create_task(runtime.run())
    try:
        yield runtime, task
    finally:
        runtime.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        await runtime.close()


def test_an_unknown_type_names_the_known_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings({"destinations": {"mystery": {"type": "echo", "url": "http://127.0.0.1:9"}}})
    assert caught.value.problems == [
        "destinations.mystery.type: unknown destination type 'echo' (known: kpi, module, x)"
    ]


async def test_a_registered_type_runs_end_to_end(
    kafka_broker: LocalKafka, topic: str, partner: FakePartner
) -> None:
    registry = default_registry().with_type(ECHO)
    echo = {"type": "echo", "url": partner.url}
    settings = make_settings(kafka_broker.bootstrap_servers, topic, 0, {"echo": echo}, registry)
    installs = [callback_record(device, 1_700_000_000) for device in range(1, 6)]
    session = callback_record(9, 1_700_000_000, "session")
    await produce_records(kafka_broker.bootstrap_servers, topic, [*installs, session])
    async with _running(registry, settings, "echo") as (runtime, _task):
        assert isinstance(runtime, DeliveryRuntime)
        await partner.wait_for(len(installs), timeout=30)
        await eventually(
            lambda: (
                runtime.metrics.registry.get_sample_value(
                    "postback_hub_skipped_total",
                    {"destination": "echo", "reason": "not_an_install"},
                )
                == 1
            ),
            what="the session skipped",
        )
    assert sorted(r.params["fingerprint"] for r in partner.received) == sorted(
        r.fingerprint for r in installs
    )


async def test_the_dead_letter_limit_stops_the_consumer_and_commits_nothing_past_it(
    kafka_broker: LocalKafka, topic: str, partner: FakePartner
) -> None:
    partner.fail_status = 400  # a revoked key: every request is refused
    destination = module_destination(partner.url)
    destination["dead_letters"] = {"consecutive": 3}
    destination["concurrency"] = 1  # one at a time, so "the first three" is well defined
    registry = default_registry()
    settings = make_settings(
        kafka_broker.bootstrap_servers, topic, 0, {"bia": destination}, registry
    )
    records = [callback_record(1, 1_700_000_000 + second) for second in range(10)]
    await produce_records(kafka_broker.bootstrap_servers, topic, records)
    async with _running(registry, settings, "bia") as (_runtime, task):
        with pytest.raises(DeadLetterLimitReached):
            await asyncio.wait_for(task, 60)
    # Three letters were written; the fourth crossed the limit and was not.
    assert await topic_size(kafka_broker.bootstrap_servers, f"{topic}.bia.dlq") == 3
    # One device's records are one partition's, in order: committed up to the fourth.
    committed = await committed_offsets(kafka_broker.bootstrap_servers, "postback-hub.bia")
    assert sum(offset for (name, _p), offset in committed.items() if name == topic) == 3
    assert partner.rejected == 4
