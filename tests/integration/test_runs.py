"""Every run is fenced: an outcome, heartbeat or release of a run that no longer holds its job
changes nothing, whether the run is a manual consumer's or a worker's."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import psycopg
import pytest
from psycopg import sql

import pgqueue
from pgqueue import AsyncPgQueue, Job, JobState, PgQueue, RunningJob
from tests.integration.test_worker import wait_until, working


def test_a_stale_manual_run_changes_nothing(pq: PgQueue) -> None:
    pq.create_queue("q", expire_in=60)
    job_id = pq.send("q", {"n": 1})
    (first,) = pq.fetch("q")
    assert first.attempt == 1
    # The first consumer stalls past expire_in: maintenance sends the job to retry, and a
    # second consumer takes it.
    pq.move_clock(61)
    assert pq.maintain().expired_active == 1
    (second,) = pq.fetch("q")
    assert (second.id, second.attempt, second.retry_count) == (job_id, 2, 1)

    # The first run wakes up: nothing it says lands on the second run.
    assert pq.complete(first, {"from": "first"}) == []
    assert pq.fail(first, "first run failed late") == []
    assert pq.touch(first, {"step": "first"}) == []
    running = pq.get_job_by_id(second.id)
    assert running is not None and running.state is JobState.active
    # Its output is still the expiry's record, its progress nobody's.
    assert (running.attempt, running.output, running.last_progress) == (2, None, None)
    assert running.errors is not None and running.errors[-1]["error"]["type"] == "expired"

    assert pq.touch([second], {"step": 1}) == [job_id]
    assert pq.complete([second], {"from": "second"}) == [job_id]
    done = pq.get_job_by_id(second.id)
    assert done is not None and done.state is JobState.completed
    assert (done.output, done.last_progress) == ({"from": "second"}, {"step": 1})
    assert pq.complete(second, "again") == []  # recorded once


def test_a_run_that_was_cancelled_and_resumed_is_stale(pq: PgQueue) -> None:
    pq.create_queue("q")
    job_id = pq.send("q")
    (first,) = pq.fetch("q")
    pq.cancel(job_id or 0)
    pq.resume(job_id or 0)
    (second,) = pq.fetch("q")
    assert pq.fail(first, "late") == []
    assert pq.complete(second, "ok") == [job_id]


def test_bare_ids_complete_whichever_run_holds_the_job(pq: PgQueue) -> None:
    pq.create_queue("q")
    a, b = pq.send("q"), pq.send("q")
    pq.fetch("q", 2)
    assert pq.complete([a or 0], "by id") == [a]
    assert pq.fail(b or 0, "by id") == [b]
    with pytest.raises(pgqueue.InvalidInputError, match="fetched Jobs or job ids"):
        pq.complete(["1"])  # type: ignore[list-item]


def _expire_by_hand(dsn: str, schema: str, job_id: int) -> None:
    """What maintenance elsewhere does to a job whose run it thinks is dead: back to retry,
    due now."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "UPDATE {}.job SET state = 'retry', retry_count = retry_count + 1, "
                "start_after = now() WHERE id = %s AND state = 'active'"
            ).format(sql.Identifier(schema)),
            (job_id,),
        )


async def test_a_worker_that_claims_its_own_job_again_keeps_the_new_runs_outcome(
    dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The same worker holds attempt 1, loses the job (another instance expired it), and
    # claims it again as attempt 2. Attempt 1 ending late must not record anything.
    pq = AsyncPgQueue(dsn, schema=schema)
    entered = {1: threading.Event(), 2: threading.Event()}
    release = {1: threading.Event(), 2: threading.Event()}
    returned = {1: threading.Event(), 2: threading.Event()}

    @pq.job("twice", retry_limit=5)
    def twice(data: Any, job: RunningJob) -> str:
        entered[job.attempt].set()
        release[job.attempt].wait(20)
        job.progress(f"progress of attempt {job.attempt}")
        returned[job.attempt].set()
        return f"attempt {job.attempt}"

    caplog.set_level(logging.WARNING, "pgqueue.worker")
    async with pq:
        job_id = await twice.send()
        assert job_id is not None
        async with working(pq, concurrency=4):
            await asyncio.to_thread(entered[1].wait, 15)
            _expire_by_hand(dsn, schema, job_id)
            await asyncio.to_thread(entered[2].wait, 15)
            # The worker knows attempt 1 lost the job, and stops it (its thread cannot be
            # stopped: whatever it returns is dropped).
            assert any(
                "attempt 1 lost the job to attempt 2" in r.getMessage() for r in caplog.records
            )
            release[1].set()
            await asyncio.to_thread(returned[1].wait, 15)
            running = await pq.get_job_by_id(job_id)
            assert running is not None and running.state is JobState.active
            assert running.attempt == 2
            release[2].set()

            async def completed() -> bool:
                job = await pq.get_job_by_id(job_id)
                return job is not None and job.state is JobState.completed

            await wait_until(completed)
        done = await pq.get_job_by_id(job_id)
    assert done is not None
    assert (done.output, done.last_progress) == ("attempt 2", "progress of attempt 2")


async def test_a_worker_stops_a_run_whose_heartbeat_is_refused(
    dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The job was taken from the run (here: by hand, as maintenance elsewhere would), and
    # another worker may already run it: this run must stop, not carry on beside it.
    pq = AsyncPgQueue(dsn, schema=schema)
    entered = asyncio.Event()
    stopped = asyncio.Event()

    @pq.job("beats", heartbeat_seconds=0.6, retry_limit=5)
    async def beats(data: Any, job: Job) -> None:
        entered.set()
        try:
            await asyncio.sleep(60)
        finally:
            stopped.set()

    async with pq:
        job_id = await beats.send()
        assert job_id is not None
        async with working(pq, queues=["beats"]):
            await asyncio.wait_for(entered.wait(), 15)
            with psycopg.connect(dsn, autocommit=True) as conn:  # taken away, not due yet
                conn.execute(
                    sql.SQL(
                        "UPDATE {}.job SET state = 'retry', start_after = now() + interval "
                        "'1 hour' WHERE id = %s"
                    ).format(sql.Identifier(schema)),
                    (job_id,),
                )
            await asyncio.wait_for(stopped.wait(), 15)
        job = await pq.get_job_by_id(job_id)
    assert job is not None and job.state is JobState.retry and job.attempt == 1
    assert any("no longer holds the job" in r.getMessage() for r in caplog.records)


async def test_a_workers_late_outcome_is_refused_and_reported(
    dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    pq = AsyncPgQueue(dsn, schema=schema)
    entered, release = threading.Event(), threading.Event()

    @pq.job("late", retry_limit=5)
    def late(data: Any) -> str:
        entered.set()
        release.wait(20)
        return "too late"

    caplog.set_level(logging.WARNING, "pgqueue.worker")
    async with pq:
        job_id = await late.send()
        assert job_id is not None
        async with working(pq):
            await asyncio.to_thread(entered.wait, 15)
            with psycopg.connect(dsn, autocommit=True) as conn:  # taken away, not due yet
                conn.execute(
                    sql.SQL(
                        "UPDATE {}.job SET state = 'retry', start_after = now() + interval "
                        "'1 hour' WHERE id = %s"
                    ).format(sql.Identifier(schema)),
                    (job_id,),
                )
            release.set()

            async def reported() -> bool:
                return any(
                    f"job {job_id}: the completed outcome of attempt 1 was not "
                    "recorded" in r.getMessage()
                    for r in caplog.records
                )

            await wait_until(reported)
        job = await pq.get_job_by_id(job_id)
    assert job is not None and job.state is JobState.retry and job.output is None


def test_a_job_from_another_schema_or_a_rolled_back_claim_is_a_stranger(
    dsn: str, schema: str, conn: psycopg.Connection[Any]
) -> None:
    other_schema = schema + "_b"
    try:
        with PgQueue(dsn, schema=schema) as a, PgQueue(dsn, schema=other_schema) as b:
            for pq in (a, b):
                pq.create_queue("q")
                pq.send("q")
            (from_a,) = a.fetch("q")
            (from_b,) = b.fetch("q")
            assert (from_a.id, from_a.attempt) == (from_b.id, from_b.attempt)  # the same
            assert b.complete(from_a, "a stranger") == []
            assert b.complete(from_b, "mine") == [from_b.id]

            # A claim rolled back with the caller's transaction leaves its Job behind; the
            # next claim counts the same attempt, but is another run.
            a.send("q")
            with psycopg.connect(dsn) as tx:
                (ghost,) = a.fetch("q", conn=tx)
                tx.rollback()
            (real,) = a.fetch("q")
            assert (real.id, real.attempt) == (ghost.id, ghost.attempt)
            assert a.complete(ghost, "ghost") == []
            assert a.complete(real, "real") == [real.id]
    finally:
        conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(other_schema))
        )


async def test_a_late_cancel_of_an_earlier_run_leaves_the_current_one_alone(
    dsn: str, schema: str, conn: psycopg.Connection[Any]
) -> None:
    pq = AsyncPgQueue(dsn, schema=schema)
    entered: dict[int, asyncio.Event] = {}
    release = asyncio.Event()

    @pq.job("long")
    async def long(data: int, job: Job) -> str:
        entered.setdefault(data, asyncio.Event()).set()
        try:
            await release.wait()
        except asyncio.CancelledError:
            return "unreachable"
        return f"finished {data}"

    async with pq:
        first, second = await long.insert([1, 2])
        async with working(pq):
            for n in (1, 2):
                await asyncio.wait_for(entered.setdefault(n, asyncio.Event()).wait(), 15)
            channel = f"{schema}_cancel"
            # The notification of an earlier run's cancellation, arriving late...
            conn.execute("SELECT pg_notify(%s, %s)", (channel, f"{first}:12345"))
            # ...then a real cancellation of the other job, which the worker sees after it.
            assert await pq.cancel(second or 0) == [second]

            async def second_stopped() -> bool:
                return (await pq.get_job_by_id(second or 0)).state is JobState.cancelled  # type: ignore[union-attr]

            await wait_until(second_stopped)
            still = await pq.get_job_by_id(first or 0)
            assert still is not None and still.state is JobState.active
            release.set()

            async def first_done() -> bool:
                job = await pq.get_job_by_id(first or 0)
                return job is not None and job.state is JobState.completed

            await wait_until(first_done)
        done = await pq.get_job_by_id(first or 0)
    assert done is not None and done.output == "finished 1"


def test_a_claim_in_a_long_transaction_is_stamped_when_it_happens(pq: PgQueue, dsn: str) -> None:
    pq.create_queue("q", expire_in=2)
    pq.send("q")
    with psycopg.connect(dsn) as tx:
        tx.execute("SELECT pg_sleep(2.5)")  # the transaction began 2.5 s before the claim
        (job,) = pq.fetch("q", conn=tx)
        tx.commit()
    assert pq.maintain().expired_active == 0  # it has not run for 2 s yet
    assert pq.complete(job) == [job.id]


def test_ids_must_be_ids(pq: PgQueue) -> None:
    for bad in ({1: "x"}, 2**63, 0, -1, [1, None]):
        with pytest.raises(pgqueue.InvalidInputError):
            pq.complete(bad)  # type: ignore[arg-type]
