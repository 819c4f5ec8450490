"""X conversions through the consumer runtime, against the real broker and a strict fake X."""

from __future__ import annotations

import logging
import signal
import time
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qsl

import orjson
import pytest
from prometheus_client import generate_latest

from postback_hub.consumers.delivery import HttpRequest
from postback_hub.consumers.dlq import read_dead_letters
from postback_hub.consumers.retry import H_BODY
from postback_hub.service.localkafka import LocalKafka, free_port
from postback_hub.service.logs import JsonFormatter
from tests.fake_x import FakeX
from tests.integration.test_module_delivery import running
from tests.support import (
    eventually,
    ios_record,
    make_settings,
    produce_records,
    read_records,
    settings_document,
    spawn_postback_hub,
    write_config,
    x_conversions,
    x_destination,
)

pytestmark = pytest.mark.integration


def _value(runtime: object, metric: str, **labels: str) -> float:
    registry = runtime.metrics.registry  # type: ignore[attr-defined]
    return registry.get_sample_value(metric, {"destination": "x", **labels}) or 0.0


async def test_conversions_are_signed_validated_and_attributions_published(
    kafka_broker: LocalKafka, topic: str, fake_x: FakeX
) -> None:
    settings = make_settings(
        kafka_broker.bootstrap_servers, topic, 0, destinations={"x": x_destination(fake_x.url)}
    )
    install = ios_record(1, 1_700_000_000)
    purchase = ios_record(
        3, 1_700_000_100, "event", event="tok_buy", revenue_float="4.99", currency="eur"
    )
    unmapped = ios_record(2, 1_700_000_000, "event", event="tok_other")

    destination = x_conversions(settings)
    request = destination.prepare(install)
    assert isinstance(request, HttpRequest)
    hashed = dict(parse_qsl(request.url.split("?", 1)[1]))["hashed_device_id"]
    fake_x.attributed.add(hashed)
    await produce_records(kafka_broker.bootstrap_servers, topic, [install, purchase, unmapped])
    async with running(settings, "x") as runtime:
        await eventually(lambda: len(fake_x.conversions()) == 2)
        await eventually(lambda: _value(runtime, "postback_hub_delivered_total") == 2)
        assert _value(runtime, "postback_hub_skipped_total", reason="event_not_mapped") == 1
        await eventually(
            lambda: _value(runtime, "postback_hub_attributions_total", attributed="true") == 1
        )
        assert _value(runtime, "postback_hub_attributions_total", attributed="false") == 1
    conversions = {c["conversion_type"]: c for c in fake_x.conversions()}  # two devices: any order
    assert sorted(conversions) == ["INSTALL", "PURCHASE"]
    assert conversions["PURCHASE"]["price_micro"] == "4990000"
    assert conversions["PURCHASE"]["price_currency"] == "EUR"
    assert all(call.status == 200 for call in fake_x.calls)  # every signature was valid

    records = await read_records(kafka_broker.bootstrap_servers, f"{topic}.x.attributions", 2)
    decisions = {orjson.loads(r.value)["fingerprint"]: orjson.loads(r.value) for r in records}
    assert decisions[install.fingerprint]["attributed"] is True
    assert (
        decisions[install.fingerprint]["twitter_attribution"]["promoted_properties"]["campaign_id"]
        == "4ns44"
    )
    assert decisions[purchase.fingerprint]["attributed"] is False


async def test_rate_limited_nothing_sent_before_reset_then_all_once(
    kafka_broker: LocalKafka, topic: str, fake_x: FakeX
) -> None:
    settings = make_settings(
        kafka_broker.bootstrap_servers, topic, 0, destinations={"x": x_destination(fake_x.url)}
    )
    records = [ios_record(device, 1_700_000_000) for device in range(1, 7)]
    await produce_records(kafka_broker.bootstrap_servers, topic, records)
    fake_x.exhaust(reset_in_s=4)
    reset_monotonic = fake_x._reset - time.time() + time.monotonic()
    async with running(settings, "x"):
        await eventually(lambda: len(fake_x.conversions()) == len(records), 40)
    first_429 = min(c.at for c in fake_x.calls if c.status == 429)
    # The first wave (sent concurrently before any answer came back) learns the limit;
    # after that, nothing goes out before the reset.
    first_wave = [c for c in fake_x.calls if c.at <= first_429 + 0.3]
    later = [c for c in fake_x.calls if c.at > first_429 + 0.3]
    assert all(c.status == 429 for c in first_wave)
    assert later
    assert all(c.status == 200 for c in later)
    assert min(c.at for c in later) >= reset_monotonic - 0.05
    counts = Counter(c["hashed_device_id"] for c in fake_x.conversions())
    assert len(counts) == len(records)
    assert set(counts.values()) == {1}


async def test_bad_credentials_dead_letter_without_a_retry_storm(
    kafka_broker: LocalKafka, topic: str, fake_x: FakeX
) -> None:
    fake_x.credentials.consumer_secret = "rotated-by-x"  # ours no longer signs validly
    destinations = {"x": x_destination(fake_x.url)}
    settings = make_settings(kafka_broker.bootstrap_servers, topic, 0, destinations=destinations)
    records = [ios_record(device, 1_700_000_000) for device in range(1, 21)]
    await produce_records(kafka_broker.bootstrap_servers, topic, records)
    async with running(settings, "x") as runtime:

        def dead(reason: str) -> float:
            return _value(runtime, "postback_hub_dead_lettered_total", reason=reason)

        await eventually(
            lambda: (
                dead("unauthorized_cooldown") + dead("http_401_UNAUTHORIZED_ACCESS") == len(records)
            )
        )
        assert _value(runtime, "postback_hub_retried_total") == 0
    # Only the first wave, sent before any answer came back, reached X; nothing after it.
    first_answer = min(c.at for c in fake_x.calls)
    assert all(c.at <= first_answer + 0.3 for c in fake_x.calls)
    assert len(fake_x.calls) <= 8  # the destination's concurrency
    assert all(c.status == 401 for c in fake_x.calls)
    letters = [letter async for letter in read_dead_letters(settings, "x")]
    assert len(letters) == len(records)
    first = next(letter for letter in letters if letter.reason.startswith("http_401"))
    assert "UNAUTHORIZED_ACCESS" in first.summary()["body"]


async def test_partner_text_in_an_error_code_reaches_no_log_line_or_metric_label(
    kafka_broker: LocalKafka, topic: str, fake_x: FakeX, caplog: pytest.LogCaptureFixture
) -> None:
    ip = "198.51.100.77"
    fake_x.echo_in_error_code = True
    destinations = {"x": x_destination(fake_x.url, {"send_device_ip": True})}
    settings = make_settings(kafka_broker.bootstrap_servers, topic, 0, destinations=destinations)
    records = [ios_record(device, 1_700_000_000, ip_address=ip) for device in range(1, 6)]
    await produce_records(kafka_broker.bootstrap_servers, topic, records)
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.WARNING, logger="aiokafka")  # as configure_logging caps it
    async with running(settings, "x") as runtime:
        await eventually(
            lambda: (
                _value(
                    runtime, "postback_hub_dead_lettered_total", reason="http_400_unrecognised_code"
                )
                == len(records)
            )
        )
        exposition = generate_latest(runtime.metrics.registry).decode()
    assert len(fake_x.calls) == len(records)
    assert all(ip in call.params.get("device_ip_address", "") for call in fake_x.calls)
    assert ip not in exposition  # no label series minted from X's text
    formatter = JsonFormatter()
    logged = [formatter.format(entry) for entry in caplog.records]
    assert any("http_400_unrecognised_code" in line for line in logged)
    assert not [line for line in logged if ip in line]
    letters = [letter async for letter in read_dead_letters(settings, "x")]
    assert [letter.reason for letter in letters] == ["http_400_unrecognised_code"] * len(records)
    # X's answer, raw, stays with the dead letter for review (and only there).
    assert all(f"INVALID_IP {ip}" in letter.headers[H_BODY] for letter in letters)


async def test_sigkill_mid_stream_posts_nothing_twice_and_loses_nothing(
    tmp_path: Path, kafka_broker: LocalKafka, topic: str, fake_x: FakeX
) -> None:
    fake_x.delay_s = 0.02
    destinations = {"x": x_destination(fake_x.url)}
    document = settings_document(
        kafka_broker.bootstrap_servers, topic, free_port(), destinations=destinations
    )
    config = write_config(tmp_path / "config.toml", document)
    records = [
        ios_record(device, 1_700_000_000 + step) for step in range(5) for device in range(1, 41)
    ]
    await produce_records(kafka_broker.bootstrap_servers, topic, records)
    log_path = tmp_path / "consumer.log"
    with log_path.open("ab") as log:
        process = spawn_postback_hub(["consume", "x"], config, log)
        restarted = process
        try:
            await eventually(lambda: len(fake_x.conversions()) >= 60, 60)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            restarted = spawn_postback_hub(["consume", "x"], config, log)
            settings = make_settings(
                kafka_broker.bootstrap_servers, topic, 0, destinations=destinations
            )

            async def settled() -> bool:
                letters = [letter async for letter in read_dead_letters(settings, "x")]
                posted = {
                    (c["hashed_device_id"], c["conversion_time"]) for c in fake_x.conversions()
                }
                return len(posted) + len(letters) >= len(records)

            await eventually(
                settled, 90, interval=0.5, what="every conversion posted or dead-lettered"
            )
            restarted.send_signal(signal.SIGTERM)
            assert restarted.wait(timeout=30) == 0
        finally:
            for proc in (process, restarted):
                if proc.poll() is None:
                    proc.kill()
    conversions = [(c["hashed_device_id"], c["conversion_time"]) for c in fake_x.conversions()]
    duplicates = [k for k, n in Counter(conversions).items() if n > 1]
    assert duplicates == []  # X has no de-duplication: never post the same conversion twice
    letters = [letter async for letter in read_dead_letters(settings, "x")]
    assert all(letter.reason.startswith("ambiguous") for letter in letters)
    print(
        f"\nX SIGKILL mid-stream: {len(records)} conversions, {len(conversions)} posted once,"
        f" {len(letters)} dead-lettered as ambiguous for review, 0 posted twice"
    )
