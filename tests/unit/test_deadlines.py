"""One timer bounding many waits behaves as asyncio.timeout does for each of them."""

from __future__ import annotations

import asyncio

import pytest

from postback_hub.service.deadlines import Deadlines

SHORT_S = 0.05


async def bounded(deadlines: Deadlines, work: asyncio.Future[str]) -> str:
    with deadlines.bound():
        return await work


async def test_a_wait_that_finishes_in_time_returns_its_result() -> None:
    deadlines = Deadlines(5.0)
    work = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(work.set_result, "acked")
    assert await bounded(deadlines, work) == "acked"
    deadlines.close()


async def test_a_wait_past_its_bound_raises_timeout_error_and_cancels_the_work() -> None:
    deadlines = Deadlines(SHORT_S)
    work: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    with pytest.raises(TimeoutError):
        await bounded(deadlines, work)
    assert work.cancelled()
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0  # the expiry's own cancellation is taken back


async def test_only_the_waits_that_never_finish_expire() -> None:
    deadlines = Deadlines(SHORT_S)
    loop = asyncio.get_running_loop()
    works: list[asyncio.Future[str]] = [loop.create_future() for _ in range(40)]
    tasks = [asyncio.create_task(bounded(deadlines, work)) for work in works]
    await asyncio.sleep(0)  # every task has entered its bound
    for n, work in enumerate(works):
        if n % 3:
            work.set_result(f"ack {n}")
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for n, result in enumerate(results):
        if n % 3:
            assert result == f"ack {n}"
        else:
            assert isinstance(result, TimeoutError)


async def test_the_timer_is_armed_again_for_waits_that_begin_later() -> None:
    deadlines = Deadlines(SHORT_S)
    loop = asyncio.get_running_loop()
    for _ in range(3):
        # Each round begins after the previous round's waits have all expired.
        with pytest.raises(TimeoutError):
            await bounded(deadlines, loop.create_future())
    late: asyncio.Future[str] = loop.create_future()
    loop.call_soon(late.set_result, "in time")
    assert await bounded(deadlines, late) == "in time"


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    deadlines = Deadlines(5.0)
    work: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(bounded(deadlines, work))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadlines.close()


async def test_a_wait_that_finished_is_never_cancelled_later() -> None:
    deadlines = Deadlines(SHORT_S)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[str] = loop.create_future()
    loop.call_soon(done.set_result, "acked")
    assert await bounded(deadlines, done) == "acked"
    # The timer armed for that wait fires during this sleep; nothing may be cancelled.
    await asyncio.sleep(SHORT_S * 3)
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0


def test_a_bound_needs_a_running_task() -> None:
    with pytest.raises(RuntimeError):
        Deadlines(1.0).bound()
