"""Retry timing and the retry state carried in Kafka headers. Pure.

Retry state never lives only in memory: a parked message carries its attempt
count, first-seen time and due time in headers of the retry topic record, so any
consumer process can pick it up after a crash or a rebalance.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import NamedTuple

H_ATTEMPTS = "ph-attempts"
H_FIRST_SEEN = "ph-first-seen-ms"
H_DUE = "ph-due-ms"
H_REASON = "ph-reason"
H_STATUS = "ph-status"
H_BODY = "ph-body"
H_ORIGIN = "ph-origin"
H_DEAD_AT = "ph-dead-at-ms"
H_REPLAYED = "ph-replayed"
H_PARKED = "ph-parked"

Headers = Sequence[tuple[str, bytes]]


def backoff_s(
    attempt: int,
    initial_s: float,
    max_s: float,
    retry_after_s: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Capped exponential backoff with full jitter; a partner's Retry-After is a floor."""
    ceiling = min(max_s, initial_s * (2 ** max(0, attempt - 1)))
    jittered = (rng or random).uniform(ceiling / 2, ceiling)
    return max(jittered, retry_after_s or 0.0)


def park_tier(parked_before: int, delays_s: Sequence[float], retry_after_s: float | None) -> int:
    """Which retry topic a message goes to: one tier further each time it is parked,
    staying on the last; a Retry-After longer than the tier's delay moves it up."""
    tier = min(parked_before, len(delays_s) - 1)
    while retry_after_s is not None and tier < len(delays_s) - 1 and delays_s[tier] < retry_after_s:
        tier += 1
    return tier


class RetryState(NamedTuple):
    attempts: int = 0
    first_seen_ms: int | None = None
    parked: int = 0

    @classmethod
    def from_headers(cls, headers: Headers | None) -> RetryState:
        if not headers:
            return _FRESH  # a first delivery: the common case
        values = dict(headers)

        def number(name: str) -> int | None:
            raw = values.get(name)
            try:
                return int(raw) if raw is not None else None
            except ValueError:
                return None

        return cls(
            attempts=number(H_ATTEMPTS) or 0,
            first_seen_ms=number(H_FIRST_SEEN),
            parked=number(H_PARKED) or 0,
        )


_FRESH = RetryState()


def retry_headers(
    state: RetryState, due_ms: int, reason: str, status: int | None, origin: str
) -> list[tuple[str, bytes]]:
    return [
        (H_ATTEMPTS, str(state.attempts).encode()),
        (H_FIRST_SEEN, str(state.first_seen_ms or 0).encode()),
        (H_PARKED, str(state.parked).encode()),
        (H_DUE, str(due_ms).encode()),
        (H_REASON, reason.encode()),
        (H_STATUS, str(status or "").encode()),
        (H_ORIGIN, origin.encode()),
    ]


def due_ms(headers: Headers | None) -> int | None:
    for key, value in headers or ():
        if key == H_DUE:
            try:
                return int(value)
            except ValueError:
                return None
    return None
