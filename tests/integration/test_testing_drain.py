"""pgqueue.testing on a real database: drain, advance, assert_sent, bind."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

import pgqueue
from pgqueue import JobState
from pgqueue.errors import InvalidInputError, WorkerError
from pgqueue.testing import (
    DrainError,
    DrainTimeoutError,
    RunFailedError,
    aadvance,
    aassert_sent,
    adrain,
    advance,
    asent_jobs,
    assert_sent,
    bind,
    drain,
    sent_jobs,
)


def test_drain_runs_a_chain_of_jobs_that_send_jobs_in_claim_order(pq: pgqueue.PgQueue) -> None:
    ran: list[tuple[str, int]] = []

    @pq.job("first")
    def first(data: dict[str, int]) -> int:
        ran.append(("first", data["n"]))
        pq.send("second", {"n": data["n"] * 10})
        return data["n"]

    @pq.job("second")
    def second(data: dict[str, int]) -> int:
        ran.append(("second", data["n"]))
        if data["n"] < 100:
            pq.send("second", {"n": data["n"] * 10})
        return data["n"]

    pq.send("first", {"n": 1})
    pq.send("first", {"n": 2}, priority=5)  # runs first: higher priority

    drained = drain(pq)

    assert ran == [
        ("first", 2),
        ("first", 1),
        ("second", 20),
        ("second", 10),
        ("second", 200),
        ("second", 100),
    ]
    assert drained.names == ["first", "first", "second", "second", "second", "second"]
    assert drained.outputs("second") == [20, 10, 200, 100]
    assert not drained.failed and drained.held == []
    assert all(r.state is JobState.completed for r in drained)
    assert len(drain(pq)) == 0  # nothing left


def test_a_failing_handler_retries_with_backoff_once_the_clock_moves(pq: pgqueue.PgQueue) -> None:
    calls: list[int] = []

    @pq.job("flaky", retry_limit=2, retry_delay=60, retry_backoff=True)
    def flaky(job: pgqueue.RunningJob) -> str:
        calls.append(job.attempt)
        if job.attempt < 3:
            raise ConnectionError(f"attempt {job.attempt} fails")
        return "done"

    job_id = pq.send("flaky")
    first = drain(pq)
    assert [r.outcome for r in first] == ["failed"]
    assert first.retried == first.failed
    assert first.runs[0].error == "ConnectionError: attempt 1 fails"
    assert isinstance(first.runs[0].exception, ConnectionError)
    assert len(drain(pq)) == 0  # the retry waits for its delay

    # With backoff (and jitter) the first retry comes 30 to 60 s later, the second 60-120 s.
    assert len(advance(pq, 29)) == 0  # not yet
    second = advance(pq, timedelta(seconds=31))
    assert [(r.attempt, r.outcome, r.state) for r in second] == [(2, "failed", JobState.retry)]
    assert len(advance(pq, 59)) == 0  # the backoff doubled the delay
    third = advance(pq, 200)
    assert [(r.attempt, r.outcome, r.output) for r in third] == [(3, "completed", "done")]
    assert calls == [1, 2, 3]
    job = pq.get_job_by_id(int(job_id or 0))
    assert job is not None and job.state is JobState.completed and job.output == "done"


def test_raise_errors_raises_the_first_failure_with_the_handlers_exception(
    pq: pgqueue.PgQueue,
) -> None:
    @pq.job("broken", retry_limit=0)
    def broken(data: Any) -> None:
        raise KeyError("missing")

    @pq.job("fine")
    def fine(data: Any) -> int:
        return 1

    pq.send("fine", priority=1)
    job_id = pq.send("broken")
    with pytest.raises(RunFailedError, match=r"\(broken\) attempt 1 failed: KeyError") as caught:
        drain(pq, raise_errors=True)
    assert isinstance(caught.value.__cause__, KeyError)
    assert caught.value.run.id == job_id and caught.value.run.state is JobState.failed
    assert caught.value.drained.outputs() == [1]  # what ran before it
    job = pq.get_job_by_id(int(job_id or 0))
    assert job is not None and job.state is JobState.failed  # recorded before raising


def test_a_handler_raising_system_exit_fails_its_job_and_the_drain_goes_on(
    pq: pgqueue.PgQueue,
) -> None:
    @pq.job("exits", retry_limit=0)
    def exits(data: Any) -> None:
        raise SystemExit(3)

    @pq.job("after")
    def after(data: Any) -> str:
        return "ran"

    pq.send("exits", priority=1)
    pq.send("after")
    drained = drain(pq)
    assert [(r.name, r.outcome) for r in drained] == [("exits", "failed"), ("after", "completed")]
    assert drained.runs[0].error is not None and drained.runs[0].error.startswith("SystemExit")


def test_a_hung_sync_handler_times_out_naming_its_job(pq: pgqueue.PgQueue) -> None:
    release = threading.Event()

    @pq.job("hangs")
    def hangs(data: Any) -> None:
        release.wait(60)

    job_id = pq.send("hangs")
    began = time.monotonic()
    try:
        with pytest.raises(DrainTimeoutError, match=rf"job {job_id} \(hangs\) attempt 1") as e:
            drain(pq, timeout=0.5)
    finally:
        release.set()
    assert time.monotonic() - began < 10
    assert e.value.job.id == job_id
    job = pq.get_job_by_id(int(job_id or 0))
    assert job is not None and job.state is JobState.failed  # no retry to hang again
    assert len(drain(pq)) == 0


async def test_a_hung_async_handler_times_out_even_if_it_ignores_cancellation(
    apq: pgqueue.AsyncPgQueue,
) -> None:
    release = asyncio.Event()

    @apq.job("stubborn")
    async def stubborn(data: Any) -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                continue  # ignores it

    job_id = await apq.send("stubborn")
    with pytest.raises(DrainTimeoutError, match=r"\(stubborn\)"):
        await adrain(apq, timeout=0.3)
    release.set()
    job = await apq.get_job_by_id(int(job_id or 0))
    assert job is not None and job.state is JobState.failed


def test_a_paused_queue_is_left_and_reported_held(pq: pgqueue.PgQueue) -> None:
    @pq.job("paused")
    def paused(data: Any) -> int:
        return 1

    job_id = pq.send("paused")
    pq.pause_queue("paused")
    drained = drain(pq)
    assert len(drained) == 0 and drained.held == [job_id]
    pq.resume_queue("paused")
    assert drain(pq).ids == [job_id]


def test_a_job_that_sends_itself_forever_stops_at_max_runs(pq: pgqueue.PgQueue) -> None:
    @pq.job("again")
    def again(data: Any) -> None:
        pq.send("again")

    pq.send("again")
    with pytest.raises(DrainError, match="max_runs"):
        drain(pq, max_runs=5)


def test_drain_fires_due_cron_schedules_and_expires_runs_past_their_time(
    pq: pgqueue.PgQueue,
) -> None:
    @pq.cron("0 3 * * *", name="nightly", data={"report": True})
    def nightly(data: dict[str, bool]) -> str:
        return "reported"

    @pq.job("slow", expire_in=60, retry_limit=1)
    def slow(data: Any) -> str:
        return "finished"

    slow_id = pq.send("slow")
    (claimed,) = pq.fetch("slow")  # a worker claims it and dies
    assert claimed.id == slow_id
    drained = advance(pq, timedelta(days=1))
    assert drained.scheduled and drained.outputs("nightly") == ["reported"]
    assert drained.maintenance is not None and drained.maintenance.expired_active == 1
    assert drained.outputs("slow") == ["finished"]  # its retry ran
    assert len(advance(pq, timedelta(hours=1))) == 0


def test_advance_in_steps_fires_each_slot(pq: pgqueue.PgQueue) -> None:
    @pq.cron("0 * * * *", name="hourly")
    def hourly(data: Any) -> None:
        return None

    drained = advance(pq, timedelta(hours=3), step=timedelta(hours=1))
    assert drained.names == ["hourly"] * 3

    @pq.job("fails")
    def fails(data: Any) -> None:
        raise ValueError("third hour")

    pq.set_clock(datetime(2030, 1, 1, 0, 30, tzinfo=timezone.utc))
    pq.schedule("fails", "0 */3 * * *")
    with pytest.raises(RunFailedError) as failed:  # at 03:00: the error has the whole advance
        advance(pq, timedelta(hours=6), step=timedelta(hours=1), raise_errors=True)
    assert failed.value.drained.names == ["hourly", "hourly", "fails"]
    assert isinstance(failed.value.__cause__, ValueError)
    with pytest.raises(InvalidInputError):
        advance(pq, -1)
    with pytest.raises(InvalidInputError):
        advance(pq, 10, step=0)


def test_drain_refuses_bad_arguments(pq: pgqueue.PgQueue) -> None:
    with pytest.raises(WorkerError, match="no job handlers"):
        drain(pq)

    @pq.job("a")
    def a(data: Any) -> None:
        return None

    for bad in ({"timeout": 0}, {"timeout": "1"}, {"max_runs": 0}, {"queues": "a"}):
        with pytest.raises(InvalidInputError):
            drain(pq, **bad)
    with pytest.raises(WorkerError, match="no handler registered for b"):
        drain(pq, queues=["b"])


async def test_advance_refuses_bad_options_before_moving_the_clock(
    pq: pgqueue.PgQueue, apq: pgqueue.AsyncPgQueue
) -> None:
    @pq.job("a")
    def a(data: Any) -> None:
        return None

    before = await asyncio.to_thread(pq.now)
    for bad in ({"timeout": -1}, {"max_runs": 0}, {"queues": "a"}, {"bogus": 1}):
        with pytest.raises(InvalidInputError):
            await asyncio.to_thread(advance, pq, 3600, **bad)
        with pytest.raises(InvalidInputError):
            await aadvance(pq, 3600, **bad)  # type: ignore[arg-type]
    with pytest.raises(WorkerError, match="no handler registered for b"):
        await aadvance(pq, 3600, queues=["b"])  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="aadvance"):
        advance(apq, 3600)  # type: ignore[arg-type]
    # the blocking object in aadvance: its clock moves, its jobs run
    assert await asyncio.to_thread(pq.send, "a", 1) is not None
    drained = await aadvance(pq, 60)  # type: ignore[arg-type]
    assert [r.name for r in drained.runs] == ["a"]
    moved = await asyncio.to_thread(pq.now) - before
    assert timedelta(seconds=60) <= moved < timedelta(seconds=3600)


def test_drain_runs_only_the_queues_asked_for(pq: pgqueue.PgQueue) -> None:
    @pq.job("a")
    def a(data: Any) -> str:
        return "a"

    @pq.job("b")
    def b(data: Any) -> str:
        return "b"

    pq.send("a")
    b_id = pq.send("b")
    assert drain(pq, queues=["a"]).outputs() == ["a"]
    assert drain(pq).ids == [b_id]


def test_assert_sent_matches_subsets_predicates_and_counts(pq: pgqueue.PgQueue) -> None:
    pq.create_queue("emails")
    pq.create_queue("other")
    pq.send("emails", {"to": "a@example.com", "template": "welcome", "vars": {"x": 1, "y": 2}})
    pq.send("emails", {"to": "b@example.com", "template": "welcome"})
    pq.send("other", [1, 2])

    assert len(assert_sent(pq, "emails", count=2)) == 2
    (one,) = assert_sent(pq, "emails", {"to": "a@example.com", "vars": {"x": 1}})
    assert one.data["template"] == "welcome"
    assert assert_sent(pq, "emails", lambda d: d["to"].startswith("b"), count=1)
    assert assert_sent(pq, "other", [1, 2])
    assert [j.name for j in sent_jobs(pq, "emails")] == ["emails", "emails"]

    with pytest.raises(AssertionError) as failure:
        assert_sent(pq, "emails", {"to": "c@example.com"})
    message = str(failure.value)
    assert "expected a job sent to 'emails' with data matching {'to': 'c@example.com'}" in message
    assert "found 0" in message and "a@example.com" in message and "b@example.com" in message
    with pytest.raises(AssertionError, match="expected 3 jobs sent to 'emails'"):
        assert_sent(pq, "emails", count=3)
    with pytest.raises(AssertionError, match="No job was sent to 'nothing'"):
        assert_sent(pq, "nothing")


def test_sent_jobs_finds_archived_jobs_too(pq: pgqueue.PgQueue) -> None:
    @pq.job("archived")
    def archived(data: Any) -> None:
        return None

    job_id = pq.send("archived", {"k": 1})
    drain(pq)
    advance(pq, timedelta(days=1))  # maintenance archives it
    (job,) = sent_jobs(pq, "archived")
    assert job.id == job_id and job.archived and job.state is JobState.completed


async def test_the_async_twins(apq: pgqueue.AsyncPgQueue) -> None:
    @apq.job("double")
    async def double(data: int) -> int:
        if data < 8:
            await apq.send("double", data * 2)
        return data * 2

    @apq.job("sync_handler")
    def sync_handler(data: int) -> int:
        return data + 1

    await apq.send("double", 1)
    await apq.send_after("sync_handler", 1, 3600)
    drained = await adrain(apq)
    assert drained.outputs("double") == [2, 4, 8, 16]
    assert (await aadvance(apq, timedelta(hours=1))).outputs() == [2]
    assert len(await aassert_sent(apq, "double", count=4)) == 4
    assert [j.data for j in await asent_jobs(apq, "double")] == [1, 2, 4, 8]


def test_bind_points_an_application_object_at_a_schema_and_back(dsn: str, schema: str) -> None:
    app = pgqueue.PgQueue("postgresql://app@db.invalid/app", schema="app")

    @app.job("hello")
    def hello(data: str) -> str:
        app.send("bye", data)
        return f"hello {data}"

    @app.job("bye")
    def bye(data: str) -> str:
        return f"bye {data}"

    with bind(app, dsn, schema) as bound:
        assert bound is app and app.schema == schema
        app.start()
        try:
            hello.send("you")
            assert drain(app).outputs() == ["hello you", "bye you"]
        finally:
            app.stop()
    assert app.schema == "app" and app.dsn == "postgresql://app@db.invalid/app"
    assert app.registry.has_undeclared  # to be declared wherever it starts next

    with bind(app, dsn, schema):
        app.start()
        try:
            with pytest.raises(InvalidInputError, match="started"):
                bind(app, dsn, schema).__enter__()
        finally:
            app.stop()


def test_jobs_a_queues_limits_hold_back_are_left_and_reported(pq: pgqueue.PgQueue) -> None:
    @pq.job("limited")
    def limited(data: int) -> int:
        return data

    pq.create_queue("limited", concurrency=1)
    pq.update_queue("limited", concurrency=1)
    first = pq.send("limited", 1)
    (running,) = pq.fetch("limited")  # another worker runs one: the limit is reached
    assert running.id == first
    second = pq.send("limited", 2)
    drained = drain(pq)
    assert len(drained) == 0 and drained.held == [second]
    pq.complete(running)
    assert drain(pq).outputs() == [2]


def test_pattern_handlers_serve_the_queues_they_match(pq: pgqueue.PgQueue) -> None:
    @pq.job("emails.*")
    def emails(data: str, job: pgqueue.RunningJob) -> str:
        return f"{job.name}: {data}"

    pq.create_queue("emails.welcome")
    pq.create_queue("other")
    pq.send("emails.welcome", "hi")
    pq.send("other", "not mine")
    drained = drain(pq)
    assert drained.outputs() == ["emails.welcome: hi"]
    assert drained.held == []  # a queue without a handler is none of the drain's business


def test_a_connection_killed_under_a_handler_does_not_lose_its_outcome(
    dsn: str, schema: str, conn: psycopg.Connection[Any]
) -> None:
    name = f"drained_{schema}"
    pq = pgqueue.PgQueue(
        make_conninfo(dsn, application_name=name), schema=schema, maintenance=False
    )

    @pq.job("killer")
    def killer(data: Any) -> str:
        # Every connection of the queue object (the pool the drain writes through).
        killed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = %s",
            (name,),
        ).fetchone()
        assert killed is not None and killed[0] >= 1
        return "survived"

    @pq.job("next")
    def next_job(data: Any) -> str:
        return "next"

    with pq:
        pq.send("killer", priority=1)
        pq.send("next")
        drained = drain(pq)
    assert drained.outputs() == ["survived", "next"]


def test_drain_needs_a_started_queue_of_the_right_flavour(
    dsn: str, schema: str, apq: pgqueue.AsyncPgQueue
) -> None:
    idle = pgqueue.PgQueue(dsn, schema=schema)

    @idle.job("x")
    def x(data: Any) -> None:
        return None

    with pytest.raises(pgqueue.PgQueueError, match="not started"):
        drain(idle)
    with pytest.raises(InvalidInputError, match="adrain"):
        drain(apq)  # type: ignore[arg-type]
    for absurd in (float("inf"), float("nan"), 10**12, "1"):
        with pytest.raises(InvalidInputError):
            advance(idle, absurd)  # type: ignore[arg-type]


def test_an_output_that_is_not_json_fails_the_run_without_retry(pq: pgqueue.PgQueue) -> None:
    @pq.job("odd", retry_limit=3)
    def odd(data: Any) -> object:
        return object()

    drained_id = pq.send("odd")
    drained = drain(pq)
    assert [(r.id, r.outcome, r.state) for r in drained] == [
        (drained_id, "failed", JobState.failed)
    ]
    assert "not JSON" in str(drained.runs[0].error)
