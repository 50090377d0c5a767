"""Waiting for jobs' results: handles, errors, timeouts, many waiters on one connection."""

from __future__ import annotations

import asyncio
import pickle
import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

import pgqueue
from pgqueue import AsyncPgQueue, JobState, PgQueue


async def _work_until(queue: AsyncPgQueue, done: asyncio.Event) -> None:
    task = asyncio.create_task(queue.work(poll_interval=0.2))
    await asyncio.wait_for(done.wait(), 30)
    queue.stop_working()
    await asyncio.wait_for(task, 15)


async def test_a_handle_waits_for_the_output(apq: AsyncPgQueue) -> None:
    @apq.job("double")
    async def double(n: int) -> int:
        return n * 2

    handle = await double.send(21)
    assert handle is not None and isinstance(handle, int) and handle == int(handle)
    assert pickle.loads(pickle.dumps(handle)) == handle  # an id wherever it goes
    task = asyncio.create_task(apq.work(poll_interval=0.2))
    assert await handle.result(timeout=10) == 42
    assert await apq.result(handle, timeout=1) == 42  # ended: answered at once
    apq.stop_working()
    await asyncio.wait_for(task, 15)


async def test_a_failed_or_cancelled_job_raises_with_its_state_and_error(
    apq: AsyncPgQueue,
) -> None:
    @apq.job("broken", retry_limit=0)
    async def broken(data: Any) -> None:
        raise ValueError("no such customer")

    failing = await broken.send(1)
    assert failing is not None
    task = asyncio.create_task(apq.work(poll_interval=0.2))
    with pytest.raises(pgqueue.JobFailedError, match="no such customer") as failed:
        await failing.result(timeout=10)
    assert failed.value.state is JobState.failed
    assert failed.value.error["type"] == "ValueError"
    assert failed.value.job_id == failing and failed.value.name == "broken"
    apq.stop_working()
    await asyncio.wait_for(task, 15)

    waiting = await broken.send(2)
    assert waiting is not None
    waiter = asyncio.create_task(waiting.result(timeout=10))
    await asyncio.sleep(0.2)  # the waiter is waiting
    await apq.cancel(waiting)
    with pytest.raises(pgqueue.JobFailedError) as cancelled:
        await waiter
    assert cancelled.value.state is JobState.cancelled


async def test_a_waiter_times_out_cleanly_and_a_deleted_job_is_not_found(
    apq: AsyncPgQueue,
) -> None:
    await apq.create_queue("never")
    handle = await apq.send("never", {"x": 1})
    assert handle is not None
    began = time.monotonic()
    with pytest.raises(pgqueue.ResultTimeoutError):
        await handle.result(timeout=0.5)
    assert 0.5 <= time.monotonic() - began < 5
    (job,) = await apq.fetch("never")  # the wait changed nothing about the job
    assert job.id == handle and job.attempt == 1
    waiter = asyncio.create_task(handle.result(timeout=10))
    await asyncio.sleep(0.2)
    await apq.delete_job(handle)
    with pytest.raises(pgqueue.JobNotFoundError):
        await waiter
    with pytest.raises(pgqueue.JobNotFoundError):
        await apq.result(999_999_999, timeout=1)


async def test_bad_waits_are_refused(apq: AsyncPgQueue) -> None:
    for bad in ("1", 1.5, True, [1, 2], None):
        with pytest.raises(pgqueue.InvalidInputError):
            await apq.result(bad)  # type: ignore[arg-type]
    for timeout in (-1, float("nan"), True, "5"):
        with pytest.raises(pgqueue.InvalidOptionError):
            await apq.result(1, timeout=timeout)  # type: ignore[arg-type]


async def test_a_thousand_waiters_share_one_listening_connection(dsn: str, schema: str) -> None:
    waiter_dsn = make_conninfo(dsn, application_name=f"waiter-{schema}")
    async with (
        AsyncPgQueue(waiter_dsn, schema=schema, maintenance=False, pool_max_size=2) as waiter,
        AsyncPgQueue(dsn, schema=schema, maintenance=False) as worker,
    ):

        @worker.job("square")
        async def square(n: int) -> int:
            return n * n

        await worker.create_queue("square")
        handles = await waiter.insert([{"name": "square", "data": n} for n in range(1000)])
        results = asyncio.gather(*(waiter.result(h or 0, timeout=60) for h in handles))
        await asyncio.sleep(0.5)  # all waiting
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                (f"waiter-{schema}",),
            )
            row = await cur.fetchone()
        assert row is not None and row[0] <= 3  # its pool of two, and the listener
        task = asyncio.create_task(worker.work(poll_interval=0.2))
        assert await results == [n * n for n in range(1000)]
        worker.stop_working()
        await asyncio.wait_for(task, 15)


async def test_results_arrive_though_the_listening_connection_is_killed(
    dsn: str, schema: str, apq: AsyncPgQueue
) -> None:
    waiter_dsn = make_conninfo(dsn, application_name=f"listener-{schema}")
    await apq.create_queue("q")
    handle = await apq.send("q", "x")
    assert handle is not None
    async with AsyncPgQueue(waiter_dsn, schema=schema, maintenance=False) as waiter:
        result = asyncio.create_task(waiter.result(handle, timeout=30))
        await asyncio.sleep(0.3)
        with psycopg.connect(dsn, autocommit=True) as conn:
            killed = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = %s AND query LIKE 'LISTEN%%'",
                (f"listener-{schema}",),
            ).fetchone()
        assert killed == (1,)
        (job,) = await apq.fetch("q")
        await apq.complete(job, {"ok": True})  # announced to no one: the poll finds it
        assert await result == {"ok": True}


def test_a_blocking_wait_gets_the_result_from_another_thread(pq: PgQueue) -> None:
    pq.create_queue("q")
    handle = pq.send("q", 5)
    assert handle is not None
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(handle.result(timeout=10)))
    waiter.start()
    time.sleep(0.2)
    (job,) = pq.fetch("q")
    pq.complete(job, "five")
    waiter.join(15)
    assert got == ["five"]
    with pytest.raises(pgqueue.ResultTimeoutError):
        pq.result(pq.send("q") or 0, timeout=0.2)


def test_each_failed_attempt_keeps_its_error(pq: PgQueue) -> None:
    pq.create_queue("flaky", retry_limit=30, retry_delay=0)
    job_id = pq.send("flaky", "x")
    assert job_id is not None
    for n in range(3):
        (job,) = pq.fetch("flaky")
        assert job.output is None  # a running job shows no earlier attempt's error
        if n:
            assert job.errors is not None and len(job.errors) == n
        pq.fail(job, {"message": f"boom {n + 1}"})
    waiting = pq.get_job_by_id(job_id)
    assert waiting is not None and waiting.state is JobState.retry
    assert waiting.output == {"message": "boom 3"}  # why it waits to retry
    assert waiting.errors is not None
    assert [e["attempt"] for e in waiting.errors] == [1, 2, 3]
    assert [e["error"] for e in waiting.errors] == [{"message": f"boom {n}"} for n in (1, 2, 3)]
    first = waiting.errors[0]
    assert first["started_at"] <= first["ended_at"] and first["worker"] is None
    for _ in range(22):
        pq.fail(pq.fetch("flaky"), "again")
    kept = pq.get_job_by_id(job_id)
    assert kept is not None and kept.errors is not None
    assert len(kept.errors) == 20  # the last twenty
    assert [e["attempt"] for e in kept.errors] == list(range(6, 26))


async def test_a_handlers_errors_are_kept_through_its_retries_and_the_archive(
    apq: AsyncPgQueue,
) -> None:
    @apq.job("flaky", retry_limit=2, retry_delay=0)
    async def flaky(data: Any, job: pgqueue.RunningJob) -> str:
        if job.attempt < 3:
            raise RuntimeError(f"attempt {job.attempt} broke")
        return "fine"

    handle = await flaky.send(None)
    assert handle is not None
    task = asyncio.create_task(apq.work(poll_interval=0.2))
    assert await handle.result(timeout=15) == "fine"
    apq.stop_working()
    await asyncio.wait_for(task, 15)
    await apq.move_clock(7200)  # past archive_completed_after
    assert (await apq.maintain()).archived == 1
    job = await apq.get_job_by_id(handle)
    assert job is not None and job.archived and job.errors is not None
    assert [(e["attempt"], e["error"]["message"]) for e in job.errors] == [
        (1, "attempt 1 broke"),
        (2, "attempt 2 broke"),
    ]
    assert "RuntimeError" in job.errors[0]["error"]["traceback"]
    assert job.errors[0]["worker"] is not None


async def test_stop_wakes_waiters_with_an_error(dsn: str, schema: str) -> None:
    queue = AsyncPgQueue(dsn, schema=schema, maintenance=False)
    await queue.start()
    await queue.create_queue("q")
    handle = await queue.send("q")
    assert handle is not None
    waiters = [asyncio.create_task(queue.result(handle)) for _ in range(3)]
    await asyncio.sleep(0.3)
    began = time.monotonic()
    await queue.stop()
    for waiter in waiters:
        with pytest.raises(pgqueue.PgQueueError, match="stopped"):
            await asyncio.wait_for(waiter, 5)
    assert time.monotonic() - began < 5


def test_many_threads_share_one_listener_and_none_outlives_stop(dsn: str, schema: str) -> None:
    with PgQueue(dsn, schema=schema, maintenance=False) as queue:
        queue.create_queue("q")
        ids = queue.insert([{"name": "q", "data": i} for i in range(32)])
        got: list[Any] = []
        threads = [
            threading.Thread(target=lambda i=i: got.append(queue.result(i or 0, timeout=20)))
            for i in ids
        ]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        assert sum(t.name == "pgqueue-results" for t in threading.enumerate()) == 1
        for job in queue.fetch("q", 32):
            queue.complete(job, job.data)
        for thread in threads:
            thread.join(20)
        assert sorted(got) == list(range(32))
    assert not [t for t in threading.enumerate() if t.name == "pgqueue-results"]


async def test_a_waiter_outlasts_its_connections_being_cut(dsn: str, schema: str) -> None:
    name = f"cut-{schema}"
    async with (
        AsyncPgQueue(make_conninfo(dsn, application_name=name), schema=schema) as waiter,
        AsyncPgQueue(dsn, schema=schema, maintenance=False) as other,
    ):
        await other.create_queue("q")
        handle = await other.send("q")
        assert handle is not None
        result = asyncio.create_task(waiter.result(handle, timeout=30))
        await asyncio.sleep(0.3)
        with psycopg.connect(dsn, autocommit=True) as conn:  # its pool's and its listener's
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s",
                (name,),
            )
        (job,) = await other.fetch("q")
        await other.complete(job, "still here")
        assert await result == "still here"


async def test_a_locked_row_neither_blocks_a_waiter_past_its_timeout_nor_hides_the_end(
    apq: AsyncPgQueue, dsn: str
) -> None:
    await apq.create_queue("q")
    handle = await apq.send("q")
    assert handle is not None
    (job,) = await apq.fetch("q")
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        await apq.touch(job, conn=conn)  # a consumer's open transaction holds the row
        began = time.monotonic()
        with pytest.raises(pgqueue.ResultTimeoutError):
            await handle.result(timeout=1)
        assert time.monotonic() - began < 3
        waiter = asyncio.create_task(handle.result(timeout=10))
        await apq.complete(job, "done", conn=conn)
        await conn.commit()
    assert await waiter == "done"  # not announced (never marked): seen by a look


def test_a_resumed_job_shows_no_old_error_while_it_runs(pq: PgQueue) -> None:
    pq.create_queue("q", retry_limit=1, retry_delay=3600)
    job_id = pq.send("q")
    assert job_id is not None
    pq.fail(pq.fetch("q"), "attempt 1 failed")
    assert pq.cancel(job_id) == [job_id] and pq.resume(job_id) == [job_id]  # to created
    (again,) = pq.fetch("q")
    assert again.output is None and again.errors is not None and len(again.errors) == 1
