"""Run jobs concurrently across keys, one at a time per key, at most N at once.

One device's activities share a key: a later one starts only when the earlier
one is settled, while other devices proceed in parallel. A fixed pool of N
workers takes keys that have work and no job running; no task is created per
message, which matters at thousands of messages a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable

Job = Callable[[], Awaitable[None]]

log = logging.getLogger("postback_hub.consumer")


class KeyedScheduler:
    def __init__(self, concurrency: int) -> None:
        self._queues: dict[Hashable, deque[Job]] = {}
        self._ready: asyncio.Queue[Hashable] = asyncio.Queue()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        # The worker about to run a job: read synchronously at the job's start.
        self.current_worker: asyncio.Task[None] | None = None
        self._workers = [
            asyncio.get_running_loop().create_task(self._work()) for _ in range(concurrency)
        ]

    def submit(self, key: Hashable, job: Job) -> None:
        queue = self._queues.get(key)
        if queue is not None:
            queue.append(job)  # runs after the key's earlier jobs
            return
        self._queues[key] = deque([job])
        self._idle.clear()
        self._ready.put_nowait(key)

    async def _work(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        while True:
            key = await self._ready.get()
            queue = self._queues[key]
            self.current_worker = task
            try:
                await queue[0]()
            except asyncio.CancelledError:
                if self._closing:
                    raise
                # One job was abandoned (its partition was revoked); the worker goes on.
                task.uncancel()
            except Exception:
                log.exception("a scheduled job failed")
            finally:
                queue.popleft()
                if queue:
                    self._ready.put_nowait(key)
                else:
                    del self._queues[key]
                    if not self._queues:
                        self._idle.set()

    async def join(self) -> None:
        await self._idle.wait()

    async def cancel(self) -> None:
        """Stop every worker (shutdown): unsettled work is redelivered after a restart."""
        self._closing = True
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self._queues.clear()
        self._idle.set()
