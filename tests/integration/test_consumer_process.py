"""Consumers as operators run them: real processes, SIGKILL, restart, the whole pipeline."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections import Counter
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from postback_hub.service.localkafka import LocalKafka, free_port
from tests.fake_partner import FakePartner
from tests.support import (
    SECRET,
    callback_record,
    eventually,
    module_destination,
    postback_hub_process,
    produce_records,
    read_records,
    receiver_process,
    settings_document,
    wait_http_ok,
    write_config,
)

pytestmark = pytest.mark.integration


def _config(tmp_path: Path, broker: LocalKafka, topic: str, destination: dict[str, Any]) -> Path:
    document = settings_document(
        broker.bootstrap_servers, topic, free_port(), destinations={"bia": destination}
    )
    return write_config(tmp_path / "config.toml", document)


def consumer_process(
    config: Path, log_path: Path, port: int
) -> AbstractContextManager[subprocess.Popen[bytes]]:
    """The destination's consumer; restarted in one test, hence one appended log."""
    args = ["consume", "bia", "--port", str(port)]
    return postback_hub_process(args, config, log_path, append=True)


async def _wait_for_dedup_mark(broker: LocalKafka, dedup_topic: str, fingerprint: str) -> None:
    async def marked() -> bool:
        records = await read_records(broker.bootstrap_servers, dedup_topic, 1, timeout=0.5)
        return any(fingerprint.encode() in r.value for r in records)

    # No pause between reads: the kill should come before the offset is committed.
    await eventually(marked, 30, interval=0.0, what="the delivery recorded in the de-dup log")


async def _deduplicated(port: int) -> float:
    """The consumer's ``postback_hub_deduplicated_total`` for bia, from its metrics page."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        text = await response.text()
    wanted = ("postback_hub_deduplicated_total", {"destination": "bia"})
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (sample.name, sample.labels) == wanted:
                return sample.value
    return 0.0


def _kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)


async def test_duplicate_across_a_sigkill_is_delivered_once(
    tmp_path: Path, kafka_broker: LocalKafka, topic: str, partner: FakePartner
) -> None:
    config = _config(tmp_path, kafka_broker, topic, module_destination(partner.url))
    log_path = tmp_path / "consumer.log"
    port = free_port()
    activity = callback_record(5, 1_700_000_000, "event", event="tok_buy")
    later = callback_record(5, 1_700_000_100, "reattribution")
    await produce_records(kafka_broker.bootstrap_servers, topic, [activity])
    with consumer_process(config, log_path, port) as process:
        await partner.wait_for(1, timeout=60)
        # Killed as soon as the delivery is recorded durably, most likely before its offset
        # is committed: the message itself comes back after the restart, as does the copy.
        await _wait_for_dedup_mark(kafka_broker, f"{topic}.bia.dedup", activity.fingerprint)
        _kill(process)
    await produce_records(kafka_broker.bootstrap_servers, topic, [activity, later])
    with consumer_process(config, log_path, port) as process:
        # The same device's later activity is settled only after both copies before it.
        await partner.wait_for(2, timeout=60)

        async def copy_deduplicated() -> bool:
            return await _deduplicated(port) >= 1

        await eventually(copy_deduplicated, what="the copy counted as a duplicate")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    assert partner.fingerprints() == [activity.fingerprint, later.fingerprint]


async def test_sigkill_mid_stream_then_restart_loses_nothing(
    tmp_path: Path, kafka_broker: LocalKafka, topic: str, partner: FakePartner
) -> None:
    config = _config(tmp_path, kafka_broker, topic, module_destination(partner.url))
    log_path = tmp_path / "consumer.log"
    partner.delay_s = 0.01
    records = [
        callback_record(device, 1_700_000_000 + step)
        for step in range(10)
        for device in range(1, 41)
    ]
    await produce_records(kafka_broker.bootstrap_servers, topic, records)
    with consumer_process(config, log_path, free_port()) as process:
        await partner.wait_for(100, timeout=60)
        _kill(process)
        killed_at = time.monotonic()
    delivered_before_kill = len(partner.received)
    assert delivered_before_kill < len(records)
    with consumer_process(config, log_path, free_port()) as process:
        expected = {r.fingerprint for r in records}
        await eventually(
            lambda: set(partner.fingerprints()) == expected,
            90,
            interval=0.2,
            what=lambda: f"all delivered ({len(set(partner.fingerprints()))} so far)",
        )
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    counts = Counter(partner.fingerprints())
    duplicates = sum(n - 1 for n in counts.values())
    print(
        f"\nSIGKILL mid-stream: {len(records)} sent, {delivered_before_kill} delivered before the"
        f" kill, {duplicates} delivered twice (the kill's window)"
    )
    # Only what was in flight when the process died can repeat: requests not yet answered,
    # and answers whose de-dup record was not yet acknowledged (milliseconds). Anything
    # delivered well before the kill was recorded, and must not come again.
    first_seen: dict[str, float] = {}
    for received in partner.received:
        first_seen.setdefault(received.params["fp"], received.at)
    for fingerprint, count in counts.items():
        if count > 1:
            assert first_seen[fingerprint] > killed_at - 0.5, "an old delivery was repeated"


async def test_run_command_carries_a_callback_from_http_to_the_partner(
    tmp_path: Path, kafka_broker: LocalKafka, topic: str, partner: FakePartner
) -> None:
    port = free_port()
    destinations = {"bia": module_destination(partner.url)}
    document = settings_document(
        kafka_broker.bootstrap_servers, topic, port, destinations=destinations
    )
    config = write_config(tmp_path / "config.toml", document)
    log_path = tmp_path / "run.log"
    env_process = receiver_process(config, log_path, workers=1, command="run")
    with env_process as process:
        await wait_http_ok(f"http://127.0.0.1:{port}/readyz")
        url = (
            f"http://127.0.0.1:{port}/v1/adjust/demo?secret={SECRET}&activity_kind=install"
            "&adid=abcdefabcdefabcdefabcdefabcdef01&created_at_milli=1700000000123"
        )
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            assert response.status == 200
            fingerprint = (await response.json())["fingerprint"]
        await partner.wait_for(1, timeout=60)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    [received] = partner.received
    assert received.params["fp"] == fingerprint
    assert received.params["created_at"] == "1700000000123"


async def test_a_consumer_waits_for_kafka_alive_but_not_ready(
    tmp_path: Path, partner: FakePartner
) -> None:
    """Kafka down: the consumer stays up, retries with backoff, and its health port says
    alive (200) but not ready (503), with no traceback in its log."""
    unreachable = f"127.0.0.1:{free_port()}"
    document = settings_document(
        unreachable, "callbacks", free_port(), destinations={"bia": module_destination(partner.url)}
    )
    config = write_config(tmp_path / "config.toml", document)
    port = free_port()
    log_path = tmp_path / "consumer.log"
    with consumer_process(config, log_path, port) as process:
        await wait_http_ok(f"http://127.0.0.1:{port}/healthz")
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/readyz") as response,
        ):
            assert response.status == 503
        # Long enough for two connection attempts (1 s, then 2 s apart).
        await eventually(
            lambda: log_path.read_text().count("cannot reach Kafka; trying again") >= 2,
            timeout=60,
            what="two connection attempts",
        )
        assert process.poll() is None  # still running, never restarted
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0
    text = log_path.read_text()
    assert "Traceback" not in text
