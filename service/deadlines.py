"""Bounded waits of one fixed length, all watched by one timer.

``asyncio.timeout`` arms a loop timer for every wait and disarms it after (about
9 us per callback in the receiver). The receiver's waits for the broker all have
the same length, so they expire in the order they began: a queue in that order
and one timer armed for the oldest pending wait check them all. On expiry the
waiting task is cancelled and the wait raises ``TimeoutError``, exactly as with
``asyncio.timeout`` (a cancellation from elsewhere still propagates as such).
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType


class Wait:
    """One bounded wait: a context manager around the awaits it bounds."""

    __slots__ = ("_cancelling", "deadline", "done", "expired", "task")

    def __init__(self, deadline: float, task: asyncio.Task[object]) -> None:
        self.deadline = deadline
        self.task = task
        self.done = False
        self.expired = False
        self._cancelling = task.cancelling()

    def __enter__(self) -> Wait:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.done = True
        if (
            self.expired
            and self.task.uncancel() <= self._cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError from exc


class Deadlines:
    """Hands out :class:`Wait` bounds of ``seconds`` each; use from one event loop."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._waits: deque[Wait] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def bound(self) -> Wait:
        """A bound for the current task, starting now: ``with deadlines.bound(): await ...``."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a bounded wait needs a running task")
        loop = self._loop
        if loop is None:
            loop = self._loop = task.get_loop()
        wait = Wait(loop.time() + self.seconds, task)
        waits = self._waits
        # Waits mostly finish in the order they began: drop the finished ones in front,
        # so the queue stays about as long as the waits in flight.
        while waits and waits[0].done:
            waits.popleft()
        waits.append(wait)
        if self._timer is None:
            self._timer = loop.call_at(wait.deadline, self._expire)
        return wait

    def _expire(self) -> None:
        self._timer = None
        assert self._loop is not None
        now = self._loop.time()
        waits = self._waits
        while waits:
            oldest = waits[0]
            if oldest.done:
                waits.popleft()
            elif oldest.deadline <= now:
                waits.popleft()
                oldest.expired = True
                oldest.task.cancel()
            else:
                self._timer = self._loop.call_at(oldest.deadline, self._expire)
                return

    def close(self) -> None:
        """Disarm the timer (the waits still pending are no longer bounded)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
