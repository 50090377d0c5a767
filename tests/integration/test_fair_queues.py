"""Queues share a worker's slots: a backlog in the queue registered first does not hold back
the jobs of a queue registered after it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pgqueue import AsyncPgQueue

BACKLOG = 20_000


async def test_a_backlog_in_the_first_queue_starves_no_other(apq: AsyncPgQueue) -> None:
    await apq.create_queue("first")
    await apq.create_queue("second")
    done = {"first": 0}
    started: list[float] = []
    backlog_then: list[int] = []

    @apq.job("first")
    async def first(data: Any) -> None:
        done["first"] += 1

    @apq.job("second")
    async def second(data: Any) -> None:
        started.append(time.monotonic())
        backlog_then.append(done["first"])

    await apq.insert([{"name": "first", "data": {"n": i}} for i in range(BACKLOG)])
    worker = asyncio.create_task(apq.work(concurrency=20, poll_interval=30))
    try:
        deadline = time.monotonic() + 60
        while done["first"] < 500:  # the backlog is being worked through, claimed ahead
            assert time.monotonic() < deadline and not worker.done()
            await asyncio.sleep(0.01)
        sent_at_done = done["first"]
        sent = time.monotonic()
        await apq.insert([{"name": "second", "data": {"n": i}} for i in range(10)])
        while len(started) < 10:
            assert time.monotonic() < deadline and not worker.done()
            await asyncio.sleep(0.01)
        # All ten started while the first queue's backlog was still mostly there (before
        # the fix they waited for all of it: ~19,500 more runs).
        assert max(backlog_then) - sent_at_done < BACKLOG // 10, (sent_at_done, backlog_then)
        assert max(started) - sent < 10  # a behaviour bound, not a timing
    finally:
        apq.stop_working()
        await asyncio.wait_for(worker, 30)
