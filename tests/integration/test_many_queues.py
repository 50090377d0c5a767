"""A worker serving a thousand queues: idle, it looks at all of them in one statement per
poll interval (not one per queue), and a job sent to any of them starts promptly."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from pgqueue import AsyncPgQueue, Job
from pgqueue.errors import InvalidInputError, InvalidNameError, WorkerError
from tests.conftest import PARTITIONED

# A thousand; two hundred in the partitioned layout, where each queue is a table and one
# transaction dropping a thousand (the test's schema) outruns max_locks_per_transaction.
QUEUES = 200 if PARTITIONED else 1000
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
        for name in (names[QUEUES * 7 // 9], names[-1]):
            sent = time.monotonic()
            await apq.send(name, {"queue": name})
            while name not in ran:
                assert time.monotonic() < deadline and not worker.done()
                await asyncio.sleep(0.01)
            assert ran[name] - sent < 2.0
    finally:
        apq.stop_working()
        await asyncio.wait_for(worker, 30)


async def test_work_selects_handlers_by_glob_pattern(apq: AsyncPgQueue) -> None:
    ran: list[str] = []

    async def handler(data: Any, job: Job) -> None:
        ran.append(job.name)

    for name in ("emails.welcome", "emails.receipt", "reports.daily", "reports.weekly"):
        apq.job(name)(handler)
        await apq.create_queue(name)
        await apq.send(name, {})
    await apq.work(until_empty=True, queues=["emails.*", "reports.weekly"])
    # The pattern selects both emails queues; a queue's name, that queue.
    assert sorted(ran) == ["emails.receipt", "emails.welcome", "reports.weekly"]
    with pytest.raises(WorkerError, match=r"no handler registered for email\.\*"):
        await apq.work(until_empty=True, queues=["email.*", "reports.daily"])
    # Refused before anything ran: the reports job still waits.
    assert [j.name for j in await apq.fetch("reports.daily")] == ["reports.daily"]


async def test_a_pattern_handler_serves_matching_queues_without_their_own(
    apq: AsyncPgQueue,
) -> None:
    served: list[tuple[str, str]] = []

    @apq.job("emails.*", priority=2)
    async def any_email(data: Any, job: Job) -> None:
        served.append(("pattern", job.name))

    @apq.job("emails.receipt")
    async def receipt(data: Any, job: Job) -> None:
        served.append(("own", job.name))

    for name in ("emails.welcome", "emails.reset", "reports"):
        await apq.create_queue(name)
    # Sending to a pattern handler names the queue; without one, or one it does not
    # match, is refused.
    with pytest.raises(InvalidInputError, match="name the queue"):
        await any_email.send({})
    with pytest.raises(InvalidInputError, match="not one that"):
        await any_email.send({}, queue="reports")
    with pytest.raises(InvalidInputError, match="not of"):
        await receipt.send({}, queue="emails.welcome")
    with pytest.raises(InvalidNameError):
        await apq.send("emails.*", {})
    welcome = await any_email.send({}, queue="emails.welcome")
    assert welcome is not None
    await apq.send("emails.reset", {})  # the pattern's defaults apply here too
    await receipt.send({})
    await apq.send("reports", {})
    await apq.work(until_empty=True)
    assert sorted(served) == [
        ("own", "emails.receipt"),
        ("pattern", "emails.reset"),
        ("pattern", "emails.welcome"),
    ]
    done = await apq.get_job_by_id(welcome)
    assert done is not None and done.priority == 2  # the pattern handler's default
    assert [j.name for j in await apq.fetch("reports")] == ["reports"]  # no handler


async def test_a_pattern_handler_finds_queues_created_while_it_works(apq: AsyncPgQueue) -> None:
    served: list[str] = []

    @apq.job("tenants.*")
    async def tenant(data: Any, job: Job) -> None:
        served.append(job.name)

    worker = asyncio.create_task(apq.work(poll_interval=30, queues=["tenants.*"]))
    try:
        deadline = time.monotonic() + 30
        await apq.create_queue("tenants.acme")
        await tenant.send({}, queue="tenants.acme")  # its notification makes it look
        while served != ["tenants.acme"]:
            assert time.monotonic() < deadline and not worker.done()
            await asyncio.sleep(0.01)
    finally:
        apq.stop_working()
        await asyncio.wait_for(worker, 30)
