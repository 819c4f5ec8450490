"""The consumer runtime's pure parts: offsets, ordering, limits, retry timing, classification."""

from __future__ import annotations

import asyncio
import random

import pytest

from postback_hub.consumers.delivery import (
    Delivered,
    Permanent,
    Retry,
    classify_http,
    retry_after_seconds,
)
from postback_hub.consumers.limits import BreakerState, CircuitBreaker, TokenBucket
from postback_hub.consumers.ordering import KeyedScheduler
from postback_hub.consumers.retry import RetryState, backoff_s, due_ms, park_tier, retry_headers
from postback_hub.consumers.runtime.commit import OffsetTracker
from postback_hub.consumers.topics import DestinationTopics
from tests.support import eventually


def test_commit_point_is_the_lowest_unsettled_offset() -> None:
    tracker = OffsetTracker()
    for offset in (10, 11, 12, 13):
        tracker.register("p0", offset)
    assert tracker.committable() == {"p0": 10}
    tracker.settle("p0", 12)
    tracker.settle("p0", 11)
    assert tracker.committable() == {"p0": 10}  # 10 is still in flight: never commit past it
    tracker.settle("p0", 10)
    assert tracker.committable() == {"p0": 13}
    tracker.mark_committed({"p0": 13})
    assert tracker.committable() == {}
    tracker.settle("p0", 13)
    assert tracker.committable() == {"p0": 14}
    tracker.forget("p0")
    assert tracker.committable() == {}
    assert tracker.pending() == 0


def state(breaker: CircuitBreaker) -> BreakerState:
    # A function call, so mypy does not narrow the property between reads.
    return breaker.state


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_one_key_runs_in_order_while_keys_run_concurrently() -> None:
    scheduler = KeyedScheduler(concurrency=4)
    events: list[str] = []
    gate = asyncio.Event()

    def job(name: str, wait: bool = False):  # type: ignore[no-untyped-def]
        async def run() -> None:
            events.append(f"start {name}")
            if wait:
                await gate.wait()
            events.append(f"end {name}")

        return run

    scheduler.submit("device-a", job("a1", wait=True))
    scheduler.submit("device-a", job("a2"))
    scheduler.submit("device-b", job("b1"))
    await eventually(lambda: "end b1" in events, 5, interval=0.001, what="b1 finishing")
    # b1 finished while a1 is blocked; a2 has not started behind a1.
    assert events == ["start a1", "start b1", "end b1"]
    gate.set()
    await scheduler.join()
    assert events[3:] == ["end a1", "start a2", "end a2"]


async def test_concurrency_is_bounded() -> None:
    scheduler = KeyedScheduler(concurrency=2)
    running = 0
    peak = 0

    async def work() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1

    for key in range(10):
        scheduler.submit(key, work)
    await scheduler.join()
    assert peak == 2


def test_breaker_opens_after_threshold_then_probes_once() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=3, open_s=10, clock=clock)
    for _ in range(2):
        breaker.record(False)
    assert state(breaker) is BreakerState.CLOSED
    breaker.record(False)
    assert state(breaker) is BreakerState.OPEN
    assert breaker.try_acquire() == pytest.approx(10)
    clock.now += 10
    assert state(breaker) is BreakerState.HALF_OPEN
    assert breaker.try_acquire() == 0  # the probe
    assert breaker.try_acquire() > 0  # everyone else waits for its answer
    breaker.record(False)  # probe failed: open again
    assert state(breaker) is BreakerState.OPEN
    clock.now += 10
    assert breaker.try_acquire() == 0
    breaker.record(True)
    assert state(breaker) is BreakerState.CLOSED
    assert breaker.try_acquire() == 0


def test_a_lost_probe_expires() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=1, open_s=5, clock=clock)
    breaker.record(False)
    clock.now += 5
    assert breaker.try_acquire() == 0  # probe taken, never reports (task cancelled)
    assert breaker.try_acquire() > 0
    clock.now += 5
    assert breaker.try_acquire() == 0


async def test_token_bucket_paces_requests() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=2, clock=clock)
    await bucket.acquire()
    await bucket.acquire()
    waiter = asyncio.create_task(bucket.acquire())
    await asyncio.sleep(0.02)
    assert not waiter.done()  # the burst is spent; real time passes but the clock does not
    clock.now += 0.15
    await asyncio.wait_for(waiter, 1)


def test_backoff_is_capped_jittered_and_floored_by_retry_after() -> None:
    rng = random.Random(7)
    delays = [backoff_s(n, 0.5, 8.0, rng=rng) for n in range(1, 10)]
    assert all(0.25 <= d <= 8.0 for d in delays)
    assert max(delays[5:]) > 4.0  # grows to the cap
    assert backoff_s(1, 0.5, 8.0, retry_after_s=30, rng=rng) == 30


def test_park_tiers_climb_and_follow_retry_after() -> None:
    tiers = [30.0, 300.0, 1800.0]
    assert [park_tier(n, tiers, None) for n in range(5)] == [0, 1, 2, 2, 2]
    assert park_tier(0, tiers, 120.0) == 1
    assert park_tier(0, tiers, 99999.0) == 2


def test_retry_state_round_trips_through_headers() -> None:
    headers = retry_headers(
        RetryState(4, 1_700_000_000_000, 2), 1_700_000_030_000, "http_503", 503, "t:1:5"
    )
    state = RetryState.from_headers(headers)
    assert state == RetryState(4, 1_700_000_000_000, 2)
    assert due_ms(headers) == 1_700_000_030_000
    assert RetryState.from_headers(None) == RetryState()
    assert RetryState.from_headers([("ph-attempts", b"x")]).attempts == 0


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, Delivered),
        (204, Delivered),
        (408, Retry),
        (429, Retry),
        (500, Retry),
        (503, Retry),
        (400, Permanent),
        (401, Permanent),
        (404, Permanent),
        (422, Permanent),
    ],
)
def test_http_classification(status: int, kind: type) -> None:
    assert isinstance(classify_http(status, {}, b"x"), kind)


def test_retry_after_in_seconds_or_http_date() -> None:
    assert classify_http(503, {"Retry-After": "7"}, b"") == Retry("http_503", 503, 7.0, "")
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert retry_after_seconds("soon") is None


def test_destination_topic_names() -> None:
    topics = DestinationTopics("callbacks", "backinapp", (30.0, 300.0))
    assert topics.group_id == "postback-hub.backinapp"
    assert topics.retry_tiers == ("callbacks.backinapp.retry-30s", "callbacks.backinapp.retry-300s")
    assert topics.consumed == ("callbacks", *topics.retry_tiers)
    assert topics.dead_letter == "callbacks.backinapp.dlq"
    assert topics.dedup == "callbacks.backinapp.dedup"


def test_error_counters_are_exported_at_zero_before_the_first_error() -> None:
    from postback_hub.consumers.metrics import ConsumerMetrics
    from postback_hub.service.metrics import ReceiverMetrics

    consumer = ConsumerMetrics("bia").render().decode()
    for reason in ("mapping_error", "undecodable_record", "expired", "internal_error"):
        line = f'postback_hub_dead_lettered_total{{destination="bia",reason="{reason}"}} 0.0'
        assert line in consumer
    receiver = ReceiverMetrics().render().decode()
    assert 'postback_hub_broker_errors_total{reason="timeout"} 0.0' in receiver
    assert 'postback_hub_broker_errors_total{reason="not_connected"} 0.0' in receiver


def test_only_x_exports_attribution_decisions() -> None:
    from postback_hub.consumers.metrics import ConsumerMetrics
    from postback_hub.consumers.x.attribution import AttributionPublisher

    module = ConsumerMetrics("bia").render().decode()
    assert "postback_hub_attributions" not in module
    x = ConsumerMetrics("x")
    AttributionPublisher("callbacks.x.attributions").attach(None, x)
    assert 'postback_hub_attributions_total{attributed="unknown",destination="x"} 0.0' in (
        x.render().decode()
    )
