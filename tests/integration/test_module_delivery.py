"""Module partner delivery through the consumer runtime, against the real broker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from postback_hub.consumers.dlq import (
    Filters,
    list_dead_letters,
    read_dead_letters,
    replay_dead_letters,
)
from postback_hub.consumers.registry import default_registry
from postback_hub.consumers.runtime import DeliveryRuntime
from postback_hub.service.localkafka import LocalKafka
from postback_hub.service.settings import Settings
from tests.fake_partner import FakePartner
from tests.support import (
    callback_record,
    committed_offsets,
    eventually,
    make_settings,
    module_destination,
    produce_records,
    topic_size,
)

pytestmark = pytest.mark.integration

RunDestination = Callable[
    [Settings, str], "contextlib.AbstractAsyncContextManager[DeliveryRuntime]"
]


@contextlib.asynccontextmanager
async def running(settings: Settings, name: str) -> AsyncIterator[DeliveryRuntime]:
    runtime = default_registry().build(settings, name)
    assert isinstance(runtime, DeliveryRuntime)
    await runtime.start()
    task = asyncio.create_task(runtime.run())
    try:
        yield runtime
    finally:
        runtime.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        await runtime.close()


def _value(runtime: DeliveryRuntime, metric: str, **labels: str) -> float:
    value = runtime.metrics.registry.get_sample_value(
        metric, {"destination": runtime.destination.name, **labels}
    )
    return value or 0.0


def _metric_reaches(runtime: DeliveryRuntime, metric: str, value: float, **labels: str) -> bool:
    return _value(runtime, metric, **labels) >= value


async def _committed(broker: LocalKafka, destination: str, topic: str) -> dict[int, int]:
    """The destination's committed offset of each partition of ``topic`` (if any)."""
    committed = await committed_offsets(broker.bootstrap_servers, f"postback-hub.{destination}")
    return {partition: offset for (name, partition), offset in committed.items() if name == topic}


async def _all_committed(broker: LocalKafka, destination: str, topic: str, count: int) -> None:
    """Wait until the destination has committed ``count`` records of ``topic``: each of them
    settled, so nothing more comes of them."""

    async def committed_count() -> bool:
        return sum((await _committed(broker, destination, topic)).values()) >= count

    await eventually(committed_count, what=f"{destination} committing {count} records of {topic}")


async def test_routing_end_to_end(
    kafka_broker: LocalKafka, topic: str, partner: FakePartner
) -> None:
    settings = make_settings(
        kafka_broker.bootstrap_servers, topic, 0, {"bia": module_destination(partner.url)}
    )
    records = [
        callback_record(1, 1_700_000_000, "install"),
        callback_record(1, 1_700_000_001, "session"),  # sessions off
        callback_record(1, 1_700_000_002, "event", event="tok_other"),  # not linked
        callback_record(1, 1_700_000_003, "event", event="tok_buy", revenue="250"),  # linked
        callback_record(2, 1_700_000_004, "install", environment="sandbox"),  # sandbox url
        callback_record(2, 1_700_000_005, "click"),  # not a module partner kind
    ]
    await produce_records(kafka_broker.bootstrap_servers, topic, records)
    async with running(settings, "bia") as runtime:
        await partner.wait_for(3)
        # Every record settled: nothing else arrives.
        await _all_committed(kafka_broker, "bia", topic, len(records))
        assert _value(runtime, "postback_hub_skipped_total", reason="sessions_off") == 1
        assert _value(runtime, "postback_hub_skipped_total", reason="event_not_linked") == 1
        assert _value(runtime, "postback_hub_skipped_total", reason="kind_not_forwarded") == 1
    paths = sorted((r.path, r.params["activity_kind"]) for r in partner.received)
    assert paths == [
        ("/pb/partner-1", "event"),
        ("/pb/partner-1", "install"),
        ("/pb/sandbox-partner-1", "install"),  # the sandbox never reaches production
    ]
    event = next(r for r in partner.received if r.params["activity_kind"] == "event")
    assert event.params["event"] == "purchase"
    assert "revenue" not in event.params  # revenue forwarding is off


async def test_outage_then_recovery_keeps_order_commits_nothing_early_and_spares_others(
    kafka_broker: LocalKafka, topic: str, partner: FakePartner, second_partner: FakePartner
) -> None:
    settings = make_settings(
        kafka_broker.bootstrap_servers,
        topic,
        0,
        {"bia": module_destination(partner.url), "other": module_destination(second_partner.url)},
    )
    devices, per_device = 6, 5
    records = [
        callback_record(device, 1_700_000_000 + step, "install" if step == 0 else "reattribution")
        for step in range(per_device)
        for device in range(1, devices + 1)
    ]
    partner.fail_status = 503
    placed = await produce_records(kafka_broker.bootstrap_servers, topic, records)
    first_offset: dict[int, int] = {}
    for partition, offset in placed:
        first_offset[partition] = min(offset, first_offset.get(partition, offset))

    async with running(settings, "bia") as failing, running(settings, "other"):
        # The healthy destination delivers everything while the other one's partner is down.
        await second_partner.wait_for(len(records), timeout=30)
        assert partner.received == []

        # The failing destination has committed on every partition it holds records of (the
        # commit step has run with them pending), and no further than the first of them.
        async def committed_everywhere() -> bool:
            return set(await _committed(kafka_broker, "bia", topic)) >= set(first_offset)

        await eventually(committed_everywhere, what="bia committing on every partition")
        for partition, offset in (await _committed(kafka_broker, "bia", topic)).items():
            assert offset <= first_offset.get(partition, offset), "committed past undelivered"
        assert _value(failing, "postback_hub_retried_total") > 0
        partner.fail_status = None
        await partner.wait_for(len(records), timeout=30)
        await _all_committed(kafka_broker, "bia", topic, len(records))
        assert _value(failing, "postback_hub_parked_total") == 0

    assert sorted(partner.fingerprints()) == sorted(r.fingerprint for r in records)
    for device in range(1, devices + 1):
        adid = f"{device:032x}"
        times = [r.params["created_at"] for r in partner.received if r.params["adid"] == adid]
        assert times == sorted(times), f"device {device} out of order"
    assert sum((await _committed(kafka_broker, "bia", topic)).values()) == len(records)


async def test_long_outage_parks_on_retry_topic_then_delivers(
    kafka_broker: LocalKafka, topic: str, partner: FakePartner
) -> None:
    destination = module_destination(
        partner.url, retry={"in_process_s": 0.5, "attempts": 3, "park_delays_s": [1.0, 2.0]}
    )
    settings = make_settings(kafka_broker.bootstrap_servers, topic, 0, {"bia": destination})
    records = [callback_record(device, 1_700_000_000) for device in range(1, 6)]
    partner.fail_status = 500
    await produce_records(kafka_broker.bootstrap_servers, topic, records)
    async with running(settings, "bia") as runtime:
        await eventually(
            lambda: _metric_reaches(runtime, "postback_hub_parked_total", len(records)),
            20,
            what="every record parked",
        )
        partner.fail_status = None
        await partner.wait_for(len(records), timeout=30)
        # Counted once the delivery is recorded durably, a moment after the partner has it.
        await eventually(
            lambda: _metric_reaches(runtime, "postback_hub_delivered_total", len(records)),
            10,
            what="every delivery counted",
        )
    assert sorted(partner.fingerprints()) == sorted(r.fingerprint for r in records)


async def test_permanent_error_dead_letters_and_replay_delivers(
    kafka_broker: LocalKafka,
    topic: str,
    partner: FakePartner,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = make_settings(
        kafka_broker.bootstrap_servers, topic, 0, {"bia": module_destination(partner.url)}
    )
    good = callback_record(1, 1_700_000_000)
    bad = callback_record(2, 1_700_000_000)
    partner.fail_status = 400
    await produce_records(kafka_broker.bootstrap_servers, topic, [bad])
    async with running(settings, "bia") as runtime:
        await eventually(
            lambda: _metric_reaches(
                runtime, "postback_hub_dead_lettered_total", 1, reason="http_400"
            ),
            20,
            what="the 400 dead-lettered",
        )
        assert _value(runtime, "postback_hub_retried_total") == 0  # a 400 is not retried
        partner.fail_status = None
        await produce_records(kafka_broker.bootstrap_servers, topic, [good])
        await partner.wait_for(1)
        assert partner.fingerprints() == [good.fingerprint]

        letters = [letter async for letter in read_dead_letters(settings, "bia")]
        assert [letter.summary()["fingerprint"] for letter in letters] == [bad.fingerprint]
        summary = letters[0].summary()
        assert summary["reason"] == "http_400"
        assert summary["status"] == "400"
        assert "induced" in summary["body"]
        await list_dead_letters(settings, "bia", Filters(reason="http_4"))
        assert bad.fingerprint in capsys.readouterr().out

        # The partner is fixed; the operator replays.
        await replay_dead_letters(settings, "bia", Filters(app="demo"))
        await partner.wait_for(2)
        # A second replay skips what was replayed; and even forced (--again), de-duplication
        # knows it was delivered.
        await replay_dead_letters(settings, "bia", Filters())
        await replay_dead_letters(settings, "bia", Filters(), again=True)
        # Replays go to the first retry topic: the first one and the forced one, nothing from
        # the second. Once both are consumed and settled, the forced one was a duplicate.
        retry_topic = f"{topic}.bia.retry-1s"
        assert await topic_size(kafka_broker.bootstrap_servers, retry_topic) == 2
        await _all_committed(kafka_broker, "bia", retry_topic, 2)
        assert _value(runtime, "postback_hub_deduplicated_total") == 1
    assert sorted(partner.fingerprints()) == sorted([good.fingerprint, bad.fingerprint])


async def test_the_same_activity_twice_is_delivered_once(
    kafka_broker: LocalKafka, topic: str, partner: FakePartner
) -> None:
    settings = make_settings(
        kafka_broker.bootstrap_servers, topic, 0, {"bia": module_destination(partner.url)}
    )
    activity = callback_record(7, 1_700_000_000, "event", event="tok_buy")
    await produce_records(kafka_broker.bootstrap_servers, topic, [activity, activity])
    async with running(settings, "bia") as runtime:
        await partner.wait_for(1)
        await eventually(
            lambda: _metric_reaches(runtime, "postback_hub_deduplicated_total", 1),
            10,
            what="the second one deduplicated",
        )
    # A new process restores the de-duplication state from Kafka.
    await produce_records(kafka_broker.bootstrap_servers, topic, [activity])
    async with running(settings, "bia") as runtime:
        await eventually(
            lambda: _metric_reaches(runtime, "postback_hub_deduplicated_total", 1),
            15,
            what="the third one deduplicated after the restart",
        )
    assert partner.fingerprints() == [activity.fingerprint]
