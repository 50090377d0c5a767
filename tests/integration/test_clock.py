"""Time is the database's: every decision reads the schema's clock, which a test can move for
every instance at once (and which a client's own clock never moves)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

import pgqueue
from pgqueue import PgQueue


def test_a_delay_is_added_to_the_databases_clock(pq: PgQueue) -> None:
    pq.create_queue("q")
    pq.move_clock(timedelta(hours=1))  # the clock the jobs live by is an hour ahead
    before = pq.now()
    job_id = pq.send_after("q", None, 60)
    after = pq.now()
    job = pq.get_job_by_id(job_id or 0)
    assert job is not None and job.start_after is not None
    assert before + timedelta(seconds=60) <= job.start_after <= after + timedelta(seconds=60)
    # A timedelta is a delay too; a date is taken as given.
    by_delta = pq.get_job_by_id(pq.send_after("q", None, timedelta(minutes=2)) or 0)
    assert by_delta is not None and by_delta.start_after is not None
    assert by_delta.start_after >= before + timedelta(minutes=2)
    at = datetime(2040, 1, 1, tzinfo=timezone.utc)
    by_date = pq.get_job_by_id(pq.send_after("q", None, at) or 0)
    assert by_date is not None and by_date.start_after == at


def test_moving_the_clock_reaches_prepared_statements_and_other_instances(
    dsn: str, schema: str
) -> None:
    with PgQueue(dsn, schema=schema) as pq, PgQueue(dsn, schema=schema) as other:
        pq.create_queue("q")
        job_id = pq.send_after("q", None, 3600)
        for _ in range(8):  # psycopg prepares a statement after its fifth run
            assert other.fetch("q") == []
        real = other.now()
        pq.move_clock(3601)
        assert other.now() - real >= timedelta(seconds=3601)
        assert [j.id for j in other.fetch("q")] == [job_id]
        pq.set_clock(None)
        assert abs(other.now() - real) < timedelta(minutes=1)


def test_queue_stats_age_waiting_jobs_by_the_clock(pq: PgQueue) -> None:
    pq.create_queue("q")
    pq.send("q")
    pq.move_clock(100)
    (stats,) = pq.get_queue_stats("q")
    assert stats.oldest_waiting_seconds is not None
    assert 100 <= stats.oldest_waiting_seconds < 130


def test_a_heartbeat_keeps_a_run_alive_by_the_databases_clock(pq: PgQueue) -> None:
    pq.create_queue("q", heartbeat_seconds=30, expire_in=3600)
    pq.send("q")
    (job,) = pq.fetch("q")
    pq.move_clock(20)
    assert pq.touch(job) == [job.id]
    pq.move_clock(20)  # 40 s since the claim, 20 s since the heartbeat
    assert pq.maintain().expired_active == 0
    pq.move_clock(15)  # 35 s since the heartbeat
    assert pq.maintain().expired_active == 1


@pytest.mark.parametrize("bad", ["soon", math.nan, math.inf, True, 1e12])
def test_bad_clock_values_are_refused(pq: PgQueue, bad: object) -> None:
    with pytest.raises(pgqueue.InvalidInputError):
        pq.move_clock(bad)  # type: ignore[arg-type]
    with pytest.raises(pgqueue.InvalidInputError, match="timezone-aware"):
        pq.set_clock(datetime(2030, 1, 1))
    with pytest.raises(pgqueue.InvalidInputError, match="100 years"):
        pq.set_clock(datetime(2300, 1, 1, tzinfo=timezone.utc))
    assert abs(pq.now() - datetime.now(timezone.utc)) < timedelta(minutes=5)


def test_the_clock_function_stays_inlined(pq: PgQueue, conn: psycopg.Connection[object]) -> None:
    # Reading the clock costs what statement_timestamp() costs: the planner inlines it,
    # moved or not, so the fetch index's start_after range still applies.
    for offset in (0, 3600):
        pq.set_clock(None)
        pq.move_clock(offset)
        row = conn.execute(
            f'EXPLAIN SELECT * FROM "{pq.schema}".job WHERE start_after <= "{pq.schema}".clock()'
        ).fetchall()
        plan = "\n".join(r[0] for r in row)  # type: ignore[index]
        assert "clock()" not in plan and "statement_timestamp()" in plan
