"""Nothing an operator does to one queue, and no trouble of one queue, stops a worker."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgqueue import AsyncPgQueue, JobState
from tests.integration.test_worker import state_of, wait_until, working


async def _done(pq: AsyncPgQueue, ids: list[int | None]) -> bool:
    return all([await state_of(pq, i) is JobState.completed for i in ids])


async def test_a_paused_queue_neither_spins_nor_starves_the_others(apq: AsyncPgQueue) -> None:
    ran: list[str] = []

    @apq.job("held")
    async def held(data: Any) -> None:
        ran.append("held")

    @apq.job("open")
    async def open_(data: Any) -> None:
        ran.append("open")

    await apq.start()
    await apq.pause_queue("held")
    held_ids = await held.insert(range(3))
    open_ids = await open_.insert(range(3))
    started = time.process_time()
    # Jobs of a paused queue are not runnable: the worker drains the rest and returns.
    await asyncio.wait_for(apq.work(until_empty=True, poll_interval=0.2), 20)
    assert ran == ["open"] * 3
    assert await _done(apq, open_ids)
    assert [await state_of(apq, i) for i in held_ids] == [JobState.created] * 3
    assert time.process_time() - started < 5  # it waited; it did not spin


async def test_pause_and_resume_while_working(apq: AsyncPgQueue) -> None:
    @apq.job("q")
    async def q(data: Any) -> None:
        pass

    @apq.job("other")
    async def other(data: Any) -> None:
        pass

    await apq.start()
    async with working(apq, poll_interval=30):  # only notifications wake it
        await apq.pause_queue("q")
        paused = await q.insert(range(5))
        others = await other.insert(range(5))
        await wait_until(lambda: _done(apq, others))
        assert [await state_of(apq, i) for i in paused] == [JobState.created] * 5
        await apq.resume_queue("q")
        await wait_until(lambda: _done(apq, paused))
    # and it stopped promptly (working() waits for the worker, up to 30 s)


async def test_one_queue_whose_claims_fail_does_not_stop_the_others(
    apq: AsyncPgQueue, conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    @apq.job("broken")
    async def broken(data: Any) -> None:
        pass

    @apq.job("fine")
    async def fine(data: Any) -> None:
        pass

    await apq.start()
    schema = sql.Identifier(apq.schema)
    # Any claim of queue 'broken' fails inside the database, whatever the reason.
    conn.execute(sql.SQL(
        "CREATE FUNCTION {0}.refuse() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'this queue cannot be claimed'; END $$; "
        "CREATE TRIGGER refuse BEFORE UPDATE ON {0}.job FOR EACH ROW "
        "WHEN (NEW.name = 'broken' AND NEW.state = 'active') EXECUTE FUNCTION {0}.refuse()"
    ).format(schema))
    bad = await broken.insert(range(3))
    good = await fine.insert(range(50))
    async with working(apq):
        await wait_until(lambda: _done(apq, good))
        conn.execute(sql.SQL("DROP TRIGGER refuse ON {}.job").format(schema))
        await wait_until(lambda: _done(apq, bad), timeout=40)
    assert any("claiming from queue broken failed" in r.getMessage() for r in caplog.records)


async def test_a_stately_job_that_cannot_go_back_to_retry_fails_on_shutdown(
    apq: AsyncPgQueue,
) -> None:
    entered = asyncio.Event()

    @apq.job("st", policy="stately", retry_limit=0)
    async def st(data: str) -> None:
        if data == "fail":
            raise RuntimeError("first one fails")
        entered.set()
        await asyncio.sleep(60)

    await apq.start()
    first = await st.send("fail", singleton_key="k")
    await apq.work(until_empty=True)
    assert await state_of(apq, first) is JobState.failed
    running = await st.send("block", singleton_key="k")
    async with working(apq, shutdown_timeout=0.1):
        await asyncio.wait_for(entered.wait(), 15)
        assert await apq.retry(first or 0) == [first]  # the key's retry place is now taken
    # The worker stopped cleanly, and handed back what it could: the running job could
    # not go back to retry, so it failed, saying why; nothing stays active.
    job = await apq.get_job_by_id(running or 0)
    assert job is not None and job.state is JobState.failed
    assert job.output["type"] == "released" and "retry()" in job.output["message"]
    assert await state_of(apq, first) is JobState.retry
