"""The pure parts of the shared Adjust HTTP client: Retry-After, backoff, scrubbing, pacing."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from postback_hub.adjust.http import (
    AdjustHttpError,
    Pacer,
    RetryPolicy,
    excerpt,
    parse_retry_after,
    retry_delay,
    scrub,
)

NOW = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", 7.0),
        (" 0 ", 0.0),
        ("Mon, 23 Nov 2026 10:00:30 GMT", 30.0),
        ("Mon, 23 Nov 2026 09:59:00 GMT", 0.0),  # in the past: no wait, never negative
        ("soon", None),
        ("-3", None),
        (None, None),
    ],
)
def test_retry_after_is_seconds_or_an_http_date(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_backoff_doubles_within_jitter_and_is_capped() -> None:
    policy = RetryPolicy(attempts=10, backoff_initial_s=1.0, backoff_max_s=8.0)
    rng = random.Random(1)
    for retry, ceiling in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (6, 8.0)]:
        for _ in range(50):
            assert ceiling / 2 <= retry_delay(retry, None, policy, rng) <= ceiling


def test_retry_after_is_the_least_wait() -> None:
    policy = RetryPolicy(backoff_initial_s=0.1, backoff_max_s=0.2)
    rng = random.Random(2)
    for _ in range(50):
        delay = retry_delay(0, 5.0, policy, rng)
        assert 5.0 <= delay <= 5.5
    # A Retry-After shorter than the backoff does not shorten the backoff.
    assert retry_delay(0, 0.0, policy, rng) >= 0.05


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="backoff"):
        RetryPolicy(backoff_initial_s=2, backoff_max_s=1)


def test_scrub_removes_every_secret_longest_first() -> None:
    text = "Token abc123 and abc123456 then abc"
    assert scrub(text, ["abc123", "abc123456", ""]) == "Token *** and *** then abc"


def test_excerpt_is_short_printable_and_credential_free() -> None:
    body = b'{"error": "token s3cr3t-t0ken\\n is\\u0007 wrong", "other": 1}'
    assert excerpt(body, ["s3cr3t-t0ken"]) == "token *** is wrong"
    long = excerpt(b"x" * 1000, [], limit=20)
    assert len(long) == 20
    assert long.endswith("…")
    assert excerpt(b"\xff\xfe plain", []) == "plain"


def test_error_repr_shows_the_message_only() -> None:
    error = AdjustHttpError("GET /app/x: 401, the token is invalid", status=401)
    assert repr(error) == "AdjustHttpError('GET /app/x: 401, the token is invalid')"
    assert str(error) == "GET /app/x: 401, the token is invalid"


async def test_pacer_spaces_starts_evenly() -> None:
    now = [100.0]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    pacer = Pacer(4.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        await pacer.wait()
    assert waits == [0.25, 0.25]
    now[0] += 10  # idle long enough: no wait, and no burst credit saved up beyond one
    await pacer.wait()
    await pacer.wait()
    assert waits == [0.25, 0.25, 0.25]
