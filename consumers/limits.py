"""Per-destination pacing: a token bucket and a circuit breaker. Clock injectable for tests."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from enum import IntEnum

Clock = Callable[[], float]


class TokenBucket:
    """At most ``rate`` requests a second on average, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: float | None = None, clock: Clock = time.monotonic):
        self.rate = rate
        self.capacity = burst if burst is not None else max(1.0, rate)
        self._tokens = self.capacity
        self._clock = clock
        self._stamp = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self) -> None:
        async with self._lock:  # first come, first served
            while True:
                self._refill()
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self.rate)


class BreakerState(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """Stops hammering a failing partner: after ``threshold`` consecutive failures no
    request goes out for ``open_s``; then one probe decides whether to close again."""

    def __init__(self, threshold: int, open_s: float, clock: Clock = time.monotonic):
        self.threshold = threshold
        self.open_s = open_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing_since: float | None = None
        self._changed = asyncio.Event()

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at >= self.open_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def try_acquire(self) -> float:
        """0 when a request may go now (it may be the probe), else seconds to wait."""
        state = self.state
        if state is BreakerState.CLOSED:
            return 0.0
        now = self._clock()
        # A probe that never reported back (its task was cancelled) expires after open_s.
        probe_stale = self._probing_since is None or now - self._probing_since >= self.open_s
        if state is BreakerState.HALF_OPEN and probe_stale:
            self._probing_since = now
            return 0.0
        assert self._opened_at is not None
        return max(0.05, self._opened_at + self.open_s - now)

    async def wait(self, deadline: float) -> bool:
        """Wait for permission until ``deadline`` (a clock reading); False if it passed."""
        while True:
            delay = self.try_acquire()
            if delay == 0:
                return True
            remaining = deadline - self._clock()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(delay, remaining))

    def record(self, success: bool) -> None:
        if success:
            self._failures = 0
            self._opened_at = None
        else:
            self._failures += 1
            if self._probing_since is not None or self._failures >= self.threshold:
                self._opened_at = self._clock()
        self._probing_since = None
        self._changed.set()
