"""Run jobs concurrently across keys, one at a time per key, at most N at once.

One device's activities share a key: a later one starts only when the earlier
one is settled, while other devices proceed in parallel.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Hashable

Job = Callable[[], Awaitable[None]]


class KeyedScheduler:
    def __init__(self, concurrency: int) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self._queues: dict[Hashable, deque[Job]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def submit(self, key: Hashable, job: Job) -> None:
        queue = self._queues.get(key)
        if queue is not None:
            queue.append(job)  # runs after the key's earlier jobs
            return
        self._queues[key] = deque([job])
        task = asyncio.get_running_loop().create_task(self._drain(key))
        self._tasks.add(task)
        self._idle.clear()
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not self._tasks:
            self._idle.set()

    async def _drain(self, key: Hashable) -> None:
        queue = self._queues[key]
        try:
            while queue:
                async with self._slots:
                    await queue[0]()
                queue.popleft()
        finally:
            self._queues.pop(key, None)

    @property
    def keys_in_flight(self) -> int:
        return len(self._queues)

    async def join(self) -> None:
        await self._idle.wait()

    async def cancel(self) -> None:
        """Abandon everything (shutdown, revocation timeout): unsettled work is redelivered."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._queues.clear()
