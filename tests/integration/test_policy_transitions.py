"""Policy indexes across every transition: retries, expiry, resume, manual retry and
redrive never break a queue's policy, never raise, and never lose a job."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

import pgqueue
from pgqueue import AsyncPgQueue, JobState, PgQueue
from tests.integration.test_worker import state_of as async_state_of
from tests.integration.test_worker import wait_until, working


def state_of(pq: PgQueue, job_id: int | None) -> JobState:
    job = pq.get_job_by_id(job_id or 0)
    assert job is not None
    return job.state


def test_stately_runs_a_keys_retry_before_its_newer_jobs(pq: PgQueue) -> None:
    pq.create_queue("st", policy="stately", retry_delay=3600)
    first = pq.send("st", "a", singleton_key="k")
    assert [j.id for j in pq.fetch("st")] == [first]
    pq.fail(first or 0, "boom")  # waits an hour to retry
    newer = pq.send("st", "b", singleton_key="k", priority=5)
    other = pq.send("st", "c", singleton_key="other")
    # The key's retry is not due, so nothing of key k runs yet: were the newer job claimed,
    # it could not go back to retry when it failed (the key's retry place is taken).
    assert [j.id for j in pq.fetch("st", 10)] == [other]
    assert state_of(pq, newer) is JobState.created
    pq.fail(other or 0, "boom")  # key 'other' had no retry waiting: retries normally
    assert state_of(pq, other) is JobState.retry


def test_stately_expiry_never_wedges_maintenance(dsn: str, schema: str) -> None:
    with PgQueue(dsn, schema=schema, maintenance=False) as pq:
        pq.create_queue("st", policy="stately", retry_delay=3600)
        first = pq.send("st", "a", singleton_key="k")
        pq.fetch("st")
        pq.fail(first or 0, "boom")
        pq.retry(first or 0)  # no-op: it is waiting to retry, not failed
        blocked = pq.send("st", "b", singleton_key="k", heartbeat_seconds=1)
        # An operator forces the retry due now and another instance claims it; the created
        # job must wait until it finishes.
        assert pq.fetch("st") == []
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("UPDATE {}.job SET start_after = now() WHERE id = %s").format(
                    sql.Identifier(schema)
                ),
                (first,),
            )
        (claimed,) = pq.fetch("st")
        assert claimed.id == first
        assert pq.fetch("st") == []  # one active per key
        pq.move_clock(timedelta(hours=2))  # its worker died: maintenance expires it
        result = pq.maintain()
        assert result.ran and result.expired_active == 1
        assert state_of(pq, first) is JobState.retry
        assert pq.maintain().ran
        assert state_of(pq, blocked) is JobState.created


def test_manual_retry_and_resume_skip_jobs_their_policy_blocks(pq: PgQueue) -> None:
    pq.create_queue("sh", policy="short")
    cancelled = pq.send("sh", "x")
    pq.cancel(cancelled or 0)
    waiting = pq.send("sh", "y")
    assert pq.resume(cancelled or 0) == []  # the one queued slot is taken
    assert state_of(pq, cancelled) is JobState.cancelled
    (job,) = pq.fetch("sh")
    assert job.id == waiting
    assert pq.resume(cancelled or 0) == [cancelled]

    pq.create_queue("std")
    failed = pq.send("std", singleton_key="only", retry_limit=0)
    pq.fetch("std")
    pq.fail(failed or 0, "boom")
    again = pq.send("std", singleton_key="only")
    assert again is not None
    assert pq.retry(failed or 0) == []  # its singleton key is taken by a newer job
    pq.delete_job(again or 0)
    assert pq.retry(failed or 0) == [failed]

    pq.create_queue("st", policy="stately", retry_delay=3600)
    jobs = []
    for data in ("a", "b"):
        jobs.append(pq.send("st", data, singleton_key="k", retry_limit=0))
        pq.fetch("st")
        pq.fail(jobs[-1] or 0, "boom")
    assert pq.retry(jobs[0] or 0) == [jobs[0]]
    assert pq.retry(jobs[1] or 0) == []  # the key's retry slot is taken


def test_redrive_leaves_blocked_jobs_in_the_dead_letter_queue(
    pq: PgQueue, conn: psycopg.Connection[Any]
) -> None:
    pq.create_queue("dlq")
    pq.create_queue("orig", policy="short", dead_letter="dlq", retry_limit=0)
    dead = []
    for i in range(2):
        job_id = pq.send("orig", i)
        pq.fetch("orig")
        pq.fail(job_id or 0, "boom")
        dead.append(job_id)
    blocker = pq.send("orig", "queued")
    assert pq.redrive("dlq") == []  # 'orig' already has its one queued job
    (stats,) = pq.get_queue_stats("dlq")
    assert stats.waiting == 2  # nothing lost
    pq.delete_job(blocker or 0)
    redriven = pq.redrive("dlq")
    assert len(redriven) == 1  # one fits; the other stays for the next redrive
    assert pq.get_queue_stats("dlq")[0].waiting == 1
    pq.delete_queue("orig")
    assert pq.redrive("dlq") == []  # origin gone: the job stays where it is
    assert pq.get_queue_stats("dlq")[0].waiting == 1


def test_a_stately_failure_with_the_retry_place_taken_fails_for_good(dsn: str, schema: str) -> None:
    with PgQueue(dsn, schema=schema, maintenance=False) as pq:
        pq.create_queue("st", policy="stately")
        running = pq.send("st", "a", singleton_key="k", heartbeat_seconds=1)
        pq.fetch("st")
        waiting = pq.send("st", "b", singleton_key="k")
        # A state the claim rule prevents, but an operator's or an older version's writes
        # can leave: the key has a job waiting to retry while another one runs.
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("UPDATE {}.job SET state = 'retry' WHERE id = %s").format(
                    sql.Identifier(schema)
                ),
                (waiting,),
            )
        pq.move_clock(60)
        result = pq.maintain()  # expiring it must not raise, or every pass would
        assert result.expired_active == 1
        assert state_of(pq, running) is JobState.expired
        assert state_of(pq, waiting) is JobState.retry


def test_one_per_key_claims_look_past_a_window_of_blocked_keys(pq: PgQueue) -> None:
    # A singleton fetch reads a bounded window of the queue in fetch order; 500 waiting jobs
    # of one key fill it, and the jobs of other keys behind them must still be claimed.
    pq.create_queue("sg", policy="singleton")
    crowd = pq.insert(
        [{"name": "sg", "data": n, "singleton_key": "busy", "priority": 5} for n in range(500)]
    )
    others = pq.insert([{"name": "sg", "data": n, "singleton_key": f"k{n}"} for n in range(5)])
    claimed = pq.fetch("sg", 6)
    assert [j.id for j in claimed] == [crowd[0], *others]
    assert pq.fetch("sg", 6) == []  # every key now has its job running
    pq.complete([j.id for j in claimed])
    assert [j.id for j in pq.fetch("sg", 6)] == [crowd[1]]


def test_a_stately_retry_outside_the_window_still_comes_first(pq: PgQueue) -> None:
    # Key "late" has a due retry of low priority, far behind 150 other keys' jobs, and a
    # newer job of high priority inside the first window: the newer job must wait.
    pq.create_queue("st", policy="stately", retry_delay=0)
    retried = pq.send("st", "late-1", singleton_key="late")
    (running,) = pq.fetch("st", 1)
    pq.fail(running.id, "boom")  # back to retry, due now, priority 0
    newer = pq.send("st", "late-2", singleton_key="late", priority=9)
    crowd = pq.insert(
        [{"name": "st", "data": n, "singleton_key": f"k{n}", "priority": 5} for n in range(150)]
    )
    assert retried is not None and newer is not None and None not in crowd
    order: list[int | None] = []
    while batch := pq.fetch("st", 10):
        order += [j.id for j in batch]
        pq.complete([j.id for j in batch])
    assert sorted(o or 0 for o in order) == sorted(i or 0 for i in [retried, newer, *crowd])
    assert order.index(retried) < order.index(newer)
    assert order[:150] == crowd  # priority first: the window never reorders other keys


def test_a_policy_change_applies_to_waiting_jobs_or_is_refused(pq: PgQueue) -> None:
    # singleton -> standard: the queue's jobs may now run together.
    pq.create_queue("q", policy="singleton")
    ids = pq.insert([{"name": "q", "data": i} for i in range(3)])
    assert [j.id for j in pq.fetch("q", 3)] == ids[:1]  # one active at a time
    pq.update_queue("q", policy="standard")
    assert sorted(j.id for j in pq.fetch("q", 3)) == ids[1:]  # claims do not fail
    assert pq.get_queue("q").policy == "standard"  # type: ignore[union-attr]

    # Changes the unfinished jobs break are refused, and nothing changes.
    pq.create_queue("s")
    waiting = pq.insert([{"name": "s"}, {"name": "s"}])  # two queued: 'short' allows one
    pq.create_queue("k", policy="singleton")
    keyed = pq.insert([{"name": "k", "singleton_key": "x"}] * 2)  # one key, twice
    for name, policy in (("s", "short"), ("k", "standard"), ("k", "short")):
        with pytest.raises(pgqueue.InvalidOptionError, match=f"cannot become '{policy}'"):
            pq.update_queue(name, policy=policy, retry_limit=7)
        queue = pq.get_queue(name)
        assert queue is not None and queue.retry_limit is None
    assert sorted(j.id for j in pq.fetch("s", 5)) == waiting
    assert [j.id for j in pq.fetch("k", 5)] == keyed[:1]


async def test_policy_changes_mid_drain_never_wedge_a_worker(dsn: str, schema: str) -> None:
    pq = AsyncPgQueue(dsn, schema=schema)

    @pq.job("serial", policy="singleton")
    async def serial(data: Any) -> None:
        await asyncio.sleep(0.001)

    async with pq:
        ids = await serial.insert(range(300))
        async with working(pq, concurrency=20):
            with pytest.raises(pgqueue.InvalidOptionError):
                await pq.update_queue("serial", policy="short")  # refused: a backlog
            await pq.update_queue("serial", policy="standard")

            async def all_done() -> bool:
                return all([await async_state_of(pq, i) is JobState.completed for i in ids])

            await wait_until(all_done, timeout=60)
