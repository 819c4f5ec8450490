"""X's request budget and refusals, per app: rate gates and cool-downs.

X announces its limits on every answer (``x-rate-limit-*``) and counts them per
access token, so apps that share a token share one :class:`RateGate`. After a 401
(the credentials refused) or a 403 (this app refused), :class:`AppLimits` holds the
app's conversions back for a cool-down, so bad credentials never make a retry
storm. Nothing here sends a request or knows a secret: apps are grouped by opaque
token and credential identities that the client hands over.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Hashable, Mapping

# The furthest ahead an x-rate-limit-reset is believed (X's windows are 15 minutes).
MAX_RESET_AHEAD_S = 3600.0


class RateGate:
    """X's limits are announced per response; treat them as the truth.

    After a 429, or with no requests remaining, nothing goes out before
    ``x-rate-limit-reset``; when few remain, requests are spread over the time
    left in the window.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._blocked_until = 0.0
        self._interval = 0.0
        self._next_slot = 0.0

    def delay(self) -> float:
        now = self._clock()
        return max(0.0, self._blocked_until - now, self._next_slot - now)

    async def wait(self) -> None:
        # Sleeping to a known deadline; a later response may move it, hence the loop.
        while (delay := self.delay()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(delay)
        if self._interval:
            self._next_slot = max(self._clock(), self._next_slot) + self._interval

    def observe(self, status: int, headers: Mapping[str, str]) -> float | None:
        """Learn from a response; returns seconds until the reset when blocked."""
        reset = _header_number(headers, "x-rate-limit-reset")
        if reset is None:
            return None
        remaining = _header_number(headers, "x-rate-limit-remaining")
        limit = _header_number(headers, "x-rate-limit-limit")
        now = self._clock()
        # X's windows last 15 minutes: a reset far beyond is not one, and believing it
        # would hold back every app of the token until its conversions expire.
        reset = min(reset, now + MAX_RESET_AHEAD_S)
        if status == 429 or (remaining is not None and remaining <= 0):
            self._blocked_until = max(self._blocked_until, reset)
            self._interval = 0.0
            return max(0.0, reset - now)
        if remaining is None or limit is None:
            self._interval = 0.0
            return None
        # Spread the last tenth of the budget over what is left of the window.
        self._interval = (reset - now) / remaining if remaining < max(1, limit // 10) else 0.0
        return None


def _header_number(headers: Mapping[str, str], name: str) -> float | None:
    try:
        value = float(headers.get(name, ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


class AppLimits:
    """The gate and the cool-downs of each app of one destination.

    ``tokens`` maps each app to the identity of its access token (apps with the same
    one share a gate); ``credentials`` to the identity of all four of its credentials.
    A 401 refuses the credentials, so it holds back every app signing with exactly
    those; a 403 may concern one app, so only it; both for ``cooldown_s``.
    """

    def __init__(
        self,
        tokens: Mapping[str, Hashable],
        credentials: Mapping[str, Hashable],
        cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        shared: dict[Hashable, RateGate] = {}
        self._gates = {app: shared.setdefault(token, RateGate()) for app, token in tokens.items()}
        self._credentials = dict(credentials)
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._refused_until: dict[Hashable, float] = {}  # by credentials, after a 401
        self._forbidden_until: dict[str, float] = {}  # by app, after a 403

    def gate(self, app: str) -> RateGate:
        return self._gates[app]

    def send_delay(self, app: str) -> float:
        """Seconds before X may be sent a request of ``app`` (0 for an unknown app)."""
        gate = self._gates.get(app)
        return 0.0 if gate is None else gate.delay()

    def cooling_down(self, app: str) -> bool:
        """Whether X refused this app's credentials, or the app, a moment ago."""
        until = max(
            self._refused_until.get(self._credentials[app], 0.0),
            self._forbidden_until.get(app, 0.0),
        )
        return self._clock() < until

    def observe(self, app: str, status: int) -> None:
        """Start a cool-down after a 401 or a 403; any other status changes nothing."""
        if status == 401:
            self._refused_until[self._credentials[app]] = self._clock() + self._cooldown_s
        elif status == 403:
            self._forbidden_until[app] = self._clock() + self._cooldown_s
