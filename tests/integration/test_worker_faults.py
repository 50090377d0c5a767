"""Nothing an operator does to one queue, and no trouble of one queue, stops a worker."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg import sql

from pgqueue import AsyncPgQueue, JobState
from pgqueue import _completer as completer_module
from pgqueue import _worker as worker_module
from pgqueue._async.runner import AsyncRunner
from tests.integration.test_worker import state_of, wait_until, working


def refuse_updates(conn: psycopg.Connection[Any], schema: str, when: str, message: str) -> None:
    """A trigger of the user's that makes the database refuse updates of jobs ``when``."""
    conn.execute(
        sql.SQL(
            "CREATE FUNCTION {0}.refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION {1}; END $$; "
            "CREATE TRIGGER refuse BEFORE UPDATE ON {0}.job FOR EACH ROW "
            "WHEN ({2}) EXECUTE FUNCTION {0}.refuse()"
        ).format(sql.Identifier(schema), sql.Literal(message), sql.SQL(when))
    )


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
    refuse_updates(
        conn,
        apq.schema,
        "NEW.name = 'broken' AND NEW.state = 'active'",
        "this queue cannot be claimed",
    )
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


async def test_an_outcome_the_database_refuses_is_isolated_and_recorded_as_a_failure(
    apq: AsyncPgQueue, conn: psycopg.Connection[Any]
) -> None:
    @apq.job("echo", retry_limit=0)
    async def echo(data: str) -> str:
        return data

    await apq.start()
    # The database refuses one completion, whatever the reason.
    refuse_updates(
        conn, apq.schema, "NEW.state = 'completed' AND NEW.output = '\"poison\"'", "refused output"
    )
    ids = await echo.insert(["poison" if i == 17 else f"ok {i}" for i in range(60)])
    await asyncio.wait_for(apq.work(until_empty=True, concurrency=60), 30)
    jobs = [await apq.get_job_by_id(i or 0) for i in ids]
    assert all(j is not None for j in jobs)
    poisoned = jobs.pop(17)
    assert poisoned is not None and poisoned.state is JobState.failed
    assert poisoned.output["type"] == "unrecordable"
    assert "refused output" in poisoned.output["message"]
    assert [j.output for j in jobs if j] == [f"ok {i}" for i in range(60) if i != 17]


async def test_errors_postgres_cannot_store_are_stored_cleaned(apq: AsyncPgQueue) -> None:
    @apq.job("bad_message", retry_limit=0)
    async def bad_message(data: Any) -> None:
        raise ValueError("nul \x00 and a lone surrogate \ud800 in the message")

    await apq.start()
    job_id = await bad_message.send()
    await asyncio.wait_for(apq.work(until_empty=True), 30)
    job = await apq.get_job_by_id(job_id or 0)
    assert job is not None and job.state is JobState.failed
    assert job.output["message"] == "nul \ufffd and a lone surrogate \ufffd in the message"


class _Custom(BaseException):
    pass


@pytest.mark.parametrize("kind", ["async", "sync"])
@pytest.mark.parametrize(
    "raised", [SystemExit, KeyboardInterrupt, GeneratorExit, StopIteration, _Custom]
)
async def test_a_handler_raising_system_exit_fails_its_job_and_nothing_else(
    apq: AsyncPgQueue, kind: str, raised: type[BaseException]
) -> None:
    if kind == "async":

        @apq.job("exits", retry_limit=0)
        async def exits(data: Any) -> None:
            raise raised(3)
    else:

        @apq.job("exits", retry_limit=0)
        def exits(data: Any) -> None:
            raise raised(3)

    @apq.job("fine")
    async def fine(data: Any) -> str:
        return "ok"

    await apq.start()
    bad = await apq.send("exits")
    good = await fine.insert(range(5))
    await asyncio.wait_for(apq.work(until_empty=True), 30)
    job = await apq.get_job_by_id(bad or 0)
    assert job is not None and job.state is JobState.failed
    # A coroutine that raises StopIteration raises RuntimeError instead (PEP 479).
    stop_in_coroutine = kind == "async" and raised is StopIteration
    assert job.output["type"] == ("RuntimeError" if stop_in_coroutine else raised.__name__)
    assert await _done(apq, good)


async def test_sync_handlers_stuck_forever_free_their_threads(apq: AsyncPgQueue) -> None:
    forever = threading.Event()  # set at the end, only to let the threads go
    ran: list[int] = []

    @apq.job("stuck", expire_in=0.5, retry_limit=0)
    def stuck(data: Any) -> None:
        forever.wait(60)

    @apq.job("quick", retry_limit=0)
    def quick(data: int) -> None:
        ran.append(data)

    await apq.start()
    blocked = await stuck.insert(range(2))
    try:
        async with working(apq, concurrency=2):
            await wait_until(lambda: _all_in(apq, blocked, JobState.expired))
            # Both threads are stuck for good; the jobs after them still run, on new ones.
            quick_ids = await quick.insert(range(5))
            await wait_until(lambda: _done(apq, quick_ids))
    finally:
        forever.set()
    assert sorted(ran) == list(range(5))


async def test_an_async_handler_that_ignores_cancellation_is_let_go(
    apq: AsyncPgQueue, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(worker_module, "CANCEL_GRACE", 0.3)

    released = asyncio.Event()  # set at the end, only to let the handler go

    @apq.job("stubborn", expire_in=0.3, retry_limit=0)
    async def stubborn(data: Any) -> None:
        while not released.is_set():
            with contextlib.suppress(asyncio.CancelledError):  # a handler that will not stop
                await asyncio.sleep(0.05)

    @apq.job("next")
    async def next_(data: Any) -> str:
        return "ran"

    await apq.start()
    held = await stubborn.send()
    try:
        async with working(apq, concurrency=1):  # one slot: the next job needs it back
            await wait_until(lambda: _all_in(apq, [held], JobState.active))
            after = await next_.send()
            await wait_until(lambda: _done(apq, [after]))
    finally:
        released.set()
    job = await apq.get_job_by_id(held or 0)
    assert job is not None and job.state is JobState.expired
    assert "ignored cancellation" in job.output["message"]
    assert any("lets it go" in r.getMessage() for r in caplog.records)


async def _all_in(pq: AsyncPgQueue, ids: list[int | None], state: JobState) -> bool:
    return all([await state_of(pq, i) is state for i in ids])


async def test_jobs_claimed_for_a_worker_that_never_got_them_go_back(
    apq: AsyncPgQueue, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A claim that committed while its reply was lost: the database counts the jobs as the
    # worker's, the worker never saw them. It finds and hands them back.
    monkeypatch.setattr(worker_module, "RECONCILE_EVERY", 0.2)
    entered = asyncio.Event()
    release = asyncio.Event()

    @apq.job("q")
    async def q(data: str) -> str:
        if data == "hold":
            entered.set()
            await release.wait()
        return data

    await apq.start()
    held = await q.send("hold")
    async with working(apq, poll_interval=30):
        await asyncio.wait_for(entered.wait(), 15)
        row = conn.execute(
            sql.SQL("SELECT worker_id FROM {}.job WHERE id = %s").format(
                sql.Identifier(apq.schema)
            ),
            (held,),
        ).fetchone()
        assert row is not None
        # Jobs sent while it is busy, and "claimed" for it behind its back.
        await apq.pause_queue("q")
        lost = await q.insert(["lost 1", "lost 2"])
        conn.execute(
            sql.SQL(
                "UPDATE {}.job SET state = 'active', worker_id = %s, attempt = 1, run_id = 7, "
                "started_at = now() WHERE id = ANY(%s)"
            ).format(sql.Identifier(apq.schema)),
            (row[0], lost),
        )
        await apq.resume_queue("q")
        await wait_until(lambda: _done(apq, lost))
        release.set()
        await wait_until(lambda: _done(apq, [held]))


async def test_outputs_pydantic_can_encode_are_stored(apq: AsyncPgQueue) -> None:
    @apq.job("typed")
    async def typed(data: Any) -> dict[str, Any]:
        return {
            "at": datetime(2030, 1, 2, tzinfo=timezone.utc),
            "id": UUID(int=5),
            "amount": Decimal("1.50"),
        }

    await apq.start()
    job_id = await typed.send()
    await asyncio.wait_for(apq.work(until_empty=True), 30)
    job = await apq.get_job_by_id(job_id or 0)
    assert job is not None and job.state is JobState.completed
    assert job.output == {
        "at": "2030-01-02T00:00:00Z",
        "id": "00000000-0000-0000-0000-000000000005",
        "amount": "1.50",
    }


async def test_a_queue_whose_turn_another_fetcher_holds_stops_nothing(
    apq: AsyncPgQueue, dsn: str
) -> None:
    @apq.job("one_at_a_time", policy="singleton")
    async def one_at_a_time(data: Any) -> None:
        pass

    @apq.job("other")
    async def other(data: Any) -> None:
        pass

    await apq.start()
    await one_at_a_time.send(singleton_key="k")
    # A manual consumer claims inside its own transaction: it holds the queue's turn until
    # it commits.
    consumer = await psycopg.AsyncConnection.connect(dsn)
    async with consumer, consumer.transaction():
        assert len(await apq.fetch("one_at_a_time", conn=consumer)) == 1
        task = asyncio.create_task(apq.work(poll_interval=0.2))
        ids = await other.insert(range(5))
        await wait_until(lambda: _done(apq, ids))
        apq.stop_working()
        await asyncio.wait_for(task, 10)  # the stop is not held up by the turn either


async def test_a_failure_the_database_refuses_too_is_dropped_and_nothing_else(
    apq: AsyncPgQueue, conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    @apq.job("work", retry_limit=0)
    async def work(data: str) -> str:
        return data

    await apq.start()
    # The database refuses every way out of 'active' for this one job.
    refuse_updates(
        conn,
        apq.schema,
        "OLD.state = 'active' AND NEW.state <> 'active' AND NEW.data = '\"poison\"'",
        "this job may not finish",
    )
    poison = await work.send("poison")
    await asyncio.wait_for(apq.work(until_empty=True), 30)
    healthy = await work.insert([f"ok {i}" for i in range(5)])
    await asyncio.wait_for(apq.work(until_empty=True), 30)
    assert await _done(apq, healthy)
    assert await state_of(apq, poison) is JobState.active  # it goes back when its beat lapses
    assert "refused recording its failure too" in caplog.text


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_a_handler_returning_an_iterator_fails_and_nothing_else(
    apq: AsyncPgQueue, kind: str
) -> None:
    def endless() -> Any:
        yield from itertools.count()

    if kind == "async":

        @apq.job("lazy", retry_limit=0)
        async def lazy(data: Any) -> Any:
            return {"items": itertools.count()}
    else:

        @apq.job("lazy", retry_limit=0)
        def lazy(data: Any) -> Any:
            return endless()

    @apq.job("fine")
    async def fine(data: Any) -> None:
        pass

    await apq.start()
    bad = await apq.send("lazy")
    good = await fine.insert(range(5))
    await asyncio.wait_for(apq.work(until_empty=True), 30)
    job = await apq.get_job_by_id(bad or 0)
    assert job is not None and job.state is JobState.failed
    assert "is an iterator, not a value" in job.output["message"]
    assert await _done(apq, good)


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for this error")


async def test_errors_that_cannot_be_printed_or_are_huge_are_recorded(
    apq: AsyncPgQueue,
) -> None:
    @apq.job("unprintable", retry_limit=0)
    async def unprintable(data: Any) -> None:
        raise _Unprintable

    @apq.job("huge", retry_limit=0)
    def huge(data: Any) -> None:
        raise ValueError("x" * 5_000_000)

    await apq.start()
    first, second = await apq.send("unprintable"), await apq.send("huge")
    await asyncio.wait_for(apq.work(until_empty=True), 30)
    a, b = await apq.get_job_by_id(first or 0), await apq.get_job_by_id(second or 0)
    assert a is not None and a.state is JobState.failed
    assert a.output["type"] == "_Unprintable" and "raised RuntimeError" in a.output["message"]
    assert b is not None and b.state is JobState.failed
    assert "characters cut" in b.output["message"]
    assert len(b.output["message"]) < 70_000 and len(b.output["traceback"]) < 70_000


async def test_a_singleton_queue_drains_a_key_without_waiting_for_polls(
    apq: AsyncPgQueue,
) -> None:
    @apq.job("serial", policy="singleton")
    async def serial(data: int) -> int:
        return data

    await apq.start()
    ids = await serial.insert(range(5), singleton_key="same")
    # Only notifications and this worker's own completions may wake it: with a poll
    # interval of a minute, each job of the key would otherwise wait for the next poll.
    async with working(apq, poll_interval=60):
        await wait_until(lambda: _done(apq, ids))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() with threads running
@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_a_child_a_handler_forks_ends_where_the_handler_ends(
    apq: AsyncPgQueue, kind: str
) -> None:
    def reap(pid: int) -> int | None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.02)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return None

    if kind == "async":

        @apq.job("forks", retry_limit=0)
        async def forks(data: Any) -> int | None:
            pid = os.fork()
            if pid == 0:
                sys.exit(7)  # in the child, as if in a script of its own
            return await asyncio.to_thread(reap, pid)
    else:

        @apq.job("forks", retry_limit=0)
        def forks(data: Any) -> int | None:
            pid = os.fork()
            if pid == 0:
                sys.exit(7)
            return reap(pid)

    await apq.start()
    job_id = await apq.send("forks")
    await asyncio.wait_for(apq.work(until_empty=True), 30)
    job = await apq.get_job_by_id(job_id or 0)
    assert job is not None and job.state is JobState.completed and job.output == 7


async def test_a_row_the_database_will_not_update_stops_no_other_beat_or_hand_back(
    apq: AsyncPgQueue, conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    release = asyncio.Event()

    @apq.job("work")
    async def work(data: str) -> str:
        await release.wait()
        return data

    await apq.start()
    ident = sql.Identifier(apq.schema)
    # No update of this one job passes while it is active: no beat, no hand-back.
    refuse_updates(
        conn,
        apq.schema,
        "OLD.state = 'active' AND OLD.data = '\"stuck\"'",
        "this job may not change",
    )
    stuck = await work.send("stuck")
    healthy = await work.insert(["a", "b"])

    def beats() -> dict[int, Any]:
        rows = conn.execute(
            sql.SQL("SELECT id, heartbeat_at FROM {}.job WHERE id = ANY(%s)").format(ident),
            (healthy,),
        ).fetchall()
        return {row[0]: row[1] for row in rows}

    async with working(apq, heartbeat_seconds=0.3, shutdown_timeout=0.1):
        first = beats()
        await wait_until(lambda: _async(all(beats()[i] not in (None, first[i]) for i in first)))
        apq.stop_working()  # hands back the runs it holds: all but the stuck one go
    assert [await state_of(apq, i) for i in healthy] == [JobState.retry] * 2
    assert await state_of(apq, stuck) is JobState.active
    assert "refused its heartbeat" in caplog.text
    assert "refused handing it back" in caplog.text
    release.set()


async def _async(value: bool) -> bool:
    return value


async def test_maintenance_expires_every_dead_run_but_one_the_database_keeps(
    apq: AsyncPgQueue, conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    await apq.create_queue("q", retry_limit=0)
    ids = [await apq.send("q", n, heartbeat_seconds=5) for n in range(4)]
    refuse_updates(
        conn,
        apq.schema,
        "OLD.state = 'active' AND NEW.state <> 'active' AND OLD.data = '2'",
        "this job may not finish",
    )
    assert len(await apq.fetch("q", 4)) == 4
    await apq.move_clock(60)  # every run's heartbeat has lapsed
    result = await apq.maintain()
    assert result.expired_active == 3 and result.errors == []
    states = [await state_of(apq, i) for i in ids]
    assert states == [JobState.expired, JobState.expired, JobState.active, JobState.expired]
    assert f"maintenance cannot expire job {ids[2]}" in caplog.text


async def test_a_job_locked_by_another_transaction_holds_back_no_other_outcome(
    apq: AsyncPgQueue, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(completer_module, "WRITE_TIMEOUT", 0.5)
    monkeypatch.setattr(completer_module, "RETRY_LOCKED", 0.2)
    proceed = asyncio.Event()

    @apq.job("work")
    async def work(data: int) -> int:
        if data < 0:
            await proceed.wait()
        return data

    await apq.start()
    first = await work.send(-1)
    holder = await psycopg.AsyncConnection.connect(dsn)
    async with holder, working(apq, heartbeat_seconds=60):
        await wait_until(lambda: _async_state_is(apq, first, JobState.active))
        # A transaction of the application's own locks the running job's row (a cancel
        # inside a transaction that stays open, say) while its handler returns.
        async with holder.transaction():
            await holder.execute(
                sql.SQL("SELECT 1 FROM {}.job WHERE id = %s FOR NO KEY UPDATE").format(
                    sql.Identifier(apq.schema)
                ),
                (first,),
            )
            proceed.set()
            others = await work.insert(range(20))
            await wait_until(lambda: _done(apq, others))
            assert await state_of(apq, first) is JobState.active
        # The transaction ended: the outcome held back is recorded.
        await wait_until(lambda: _done(apq, [first]))


async def _async_state_is(pq: AsyncPgQueue, job_id: int | None, state: JobState) -> bool:
    return await state_of(pq, job_id) is state


async def test_jobs_sent_while_the_policy_changed_do_not_wedge_the_queue(
    apq: AsyncPgQueue, conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    @apq.job("q")
    async def q(data: int) -> int:
        return data

    await apq.start()
    ids = await q.insert(range(10))
    # What a send that read the policy just before update_queue(policy="standard")
    # committed leaves behind: waiting jobs of one key that still say "singleton".
    conn.execute(
        sql.SQL("UPDATE {}.job SET policy = 'singleton' WHERE id = ANY(%s)").format(
            sql.Identifier(apq.schema)
        ),
        (ids[:4],),
    )
    await asyncio.wait_for(apq.work(until_empty=True), 30)
    assert await _done(apq, ids)
    assert "kept the old one" in caplog.text


async def test_a_stop_asked_before_the_worker_runs_is_kept(dsn: str, schema: str) -> None:
    # PgQueue.work() opens the worker's pool before its loop runs: a stop_working() (or a
    # SIGTERM) in that window must still end it.
    from pgqueue._core import Core
    from pgqueue._migrate import migrate_plan
    from pgqueue._registry import Registry
    from pgqueue._sql import Statements
    from pgqueue._sync.runner import run_sync

    statements = Statements(schema)
    with psycopg.connect(dsn, autocommit=True) as conn:
        run_sync(conn, migrate_plan(statements))
    registry = Registry()
    registry.register("noop", lambda data: None)
    runner = AsyncRunner(dsn, name="test", min_size=1, max_size=2, connect_timeout=10)
    await runner.open()
    try:
        worker = worker_module.Worker(runner, Core(statements, registry), poll_interval=60)
        worker.stop()
        await asyncio.wait_for(worker.run(), 30)  # returns at once instead of working on
    finally:
        await runner.close()
