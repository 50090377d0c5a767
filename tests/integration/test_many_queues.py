"""A worker serving a thousand queues: idle, it looks at all of them in one statement per
poll interval (not one per queue), and a job sent to any of them starts promptly."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from pgqueue import AsyncPgQueue

QUEUES = 1000
POLL = 0.25


@pytest.mark.slow
async def test_an_idle_worker_costs_the_same_whatever_its_queues(
    apq: AsyncPgQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = [f"q{i:04}" for i in range(QUEUES)]
    ran: dict[str, float] = {}

    async def handler(data: Any) -> None:
        ran[data["queue"]] = time.monotonic()

    for name in names:
        apq.job(name)(handler)
    runner = apq._runner
    assert runner is not None
    statements = [0]
    run = runner.run

    async def counted(*args: Any, **kwargs: Any) -> Any:
        statements[0] += 1
        return await run(*args, **kwargs)

    monkeypatch.setattr(runner, "run", counted)
    worker = asyncio.create_task(apq.work(poll_interval=POLL))
    try:
        deadline = time.monotonic() + 60
        await apq.send(names[0], {"queue": names[0]})
        while names[0] not in ran:  # up, and through its first look at the queues
            assert time.monotonic() < deadline and not worker.done()
            await asyncio.sleep(0.01)
        await asyncio.sleep(POLL)  # the outcome written
        # Idle for 2 seconds: 8 poll intervals, each one statement (before: one claim per
        # queue, 8,000).
        before, began = statements[0], time.monotonic()
        while time.monotonic() - began < 2.0:
            assert not worker.done()
            await asyncio.sleep(0.05)
        idle = statements[0] - before
        assert idle <= 2.0 / POLL + 4, idle
        # A job sent to any queue starts promptly.
        for name in (names[777], names[-1]):
            sent = time.monotonic()
            await apq.send(name, {"queue": name})
            while name not in ran:
                assert time.monotonic() < deadline and not worker.done()
                await asyncio.sleep(0.01)
            assert ran[name] - sent < 2.0
    finally:
        apq.stop_working()
        await asyncio.wait_for(worker, 30)
