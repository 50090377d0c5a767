"""What operators read in the logs: expiries and lost (and regained) connections are
WARNINGs that say what happened."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import psycopg
import pytest

from pgqueue import AsyncPgQueue, JobState


def warnings(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and text in r.getMessage()
    ]


async def until(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)


async def test_maintenance_logs_the_jobs_it_expires(
    apq: AsyncPgQueue, caplog: pytest.LogCaptureFixture
) -> None:
    await apq.create_queue("q", retry_limit=0)
    running = await apq.send("q", heartbeat_seconds=5)
    waiting = await apq.send("q", retention=60, start_after=30)
    assert running is not None and waiting is not None
    assert len(await apq.fetch("q")) == 1
    await apq.move_clock(120)  # the run's heartbeat lapsed; the other waited past retention
    result = await apq.maintain()
    assert (result.expired_active, result.expired_waiting) == (1, 1)
    (active,) = warnings(caplog, "maintenance expired 1 running jobs")
    assert f": {running}" in active and "stopped beating" in active
    assert warnings(caplog, "maintenance expired 1 jobs that waited past their retention")
    assert (await apq.get_job_by_id(running)) is not None


async def test_a_worker_logs_losing_and_regaining_its_connections(
    apq: AsyncPgQueue, conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    @apq.job("q")
    async def q(data: None) -> None:
        pass

    listening = asyncio.Event()
    apq.on("listening", lambda worker: listening.set())
    working = asyncio.create_task(apq.work())
    try:
        await asyncio.wait_for(listening.wait(), 20)
        listening.clear()
        # Cut every connection of the schema's workers: the listener and the pool's.
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND query LIKE %s",
            [f"%{apq.schema}%"],
        )
        await asyncio.wait_for(listening.wait(), 20)  # listening again
        await until(lambda: warnings(caplog, "notification connection back after"))
        assert warnings(caplog, "notification connection lost")
        job = await apq.send("q")  # the worker claims again
        assert job is not None

        async def done() -> bool:
            found = await apq.get_job_by_id(job)
            return found is not None and found.state == JobState.completed

        deadline = time.monotonic() + 20
        while not await done():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    finally:
        apq.stop_working()
        await working
    lost = warnings(caplog, "claiming jobs failed")
    if lost:  # the fetcher's connection was among those cut: it says it is back too
        assert warnings(caplog, "claiming jobs works again after")
