"""pgqueue through a real PgBouncer, in transaction and in session mode.

In transaction mode each transaction may run on another server connection: nothing may be
prepared (``prepare=False``) unless PgBouncer carries prepared statements (1.21+ with
``max_prepared_statements`` > 0: the "transaction-prepared" mode, skipped on older
versions), no session state may be left behind, and notifications never arrive (the
listener gets ``listen_dsn`` straight to PostgreSQL, or pgqueue polls). The binary is
``$PGQUEUE_PGBOUNCER`` when set; its version is part of each test's id.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest

from pgqueue import AsyncPgQueue, JobState, PgQueue, RunningJob
from pgqueue._migrate import latest_version, migrate_plan
from pgqueue._sql import Statements
from pgqueue._sync.runner import run_sync

from .pgbouncer import (
    BINARY_ENV,
    carries_prepared_statements,
    pgbouncer_version,
    require_pgbouncer,
    running_pgbouncer,
)

VERSION = pgbouncer_version()
MODES = ["transaction", "transaction-prepared", "session"]


@pytest.fixture(scope="module", params=MODES, ids=[f"{m}-pgbouncer-{VERSION}" for m in MODES])
def bouncer(request: pytest.FixtureRequest, dsn: str) -> Iterator[tuple[str, str]]:
    """(mode, DSN through a PgBouncer in that mode), one PgBouncer per mode."""
    require_pgbouncer()
    mode: str = request.param
    newer = carries_prepared_statements(VERSION)
    if mode == "transaction-prepared" and not newer:
        pytest.skip(
            f"PgBouncer {VERSION} cannot carry prepared statements in transaction mode "
            f"(1.21+ with max_prepared_statements > 0 can); set {BINARY_ENV} to a newer "
            "pgbouncer binary to run these"
        )
    # The plain transaction mode is the one that cannot keep prepared statements, whatever
    # the version (1.24+ keeps up to 200 by default).
    kept = {"transaction": 0, "transaction-prepared": 200}.get(mode) if newer else None
    # In session mode each client holds a server connection while it is connected: the
    # pool must be as large as every pool, listener and waiter of the clients together.
    pool_size = 60 if mode == "session" else 4
    with running_pgbouncer(dsn, pool_mode(mode), pool_size, kept) as bounced:
        yield mode, bounced


def pool_mode(mode: str) -> str:
    """PgBouncer's pool_mode for a test mode."""
    return "session" if mode == "session" else "transaction"


def prepared(mode: str) -> bool:
    """Whether pgqueue may prepare statements through PgBouncer in ``mode``."""
    return mode != "transaction"


def options(mode: str) -> dict[str, Any]:
    """What a queue object behind PgBouncer in ``mode`` is given: in transaction mode
    polling only, and nothing prepared unless PgBouncer carries prepared statements."""
    if mode == "session":
        return {}
    return {"prepare": prepared(mode), "listen": False}


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 15.0, what: str = "condition"
) -> None:
    """Poll ``predicate`` until it holds; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not met within {timeout}s")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def working(pq: AsyncPgQueue, **kwargs: Any) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(pq.work(**kwargs))
    try:
        yield task
    finally:
        pq.stop_working()
        await asyncio.wait_for(task, 30)


def migration_locks(conn: psycopg.Connection[Any], schema: str) -> int:
    """Sessions holding or waiting for the schema's migration lock."""
    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
        "AND objid::bigint = hashtext(%s)::bigint & 4294967295",
        (f"pgqueue.migrate.{schema}",),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_sends_single_and_batched_many_times(
    bouncer: tuple[str, str], schema: str, conn: psycopg.Connection[Any]
) -> None:
    mode, bounced = bouncer
    with PgQueue(bounced, schema=schema, maintenance=False, **options(mode)) as pq:
        pq.create_queue("q")
        ids: list[int | None] = [pq.send("q", {"i": i}) for i in range(20)]  # prepared at 5
        for batch in range(10):
            ids += pq.insert([{"name": "q", "data": {"batch": batch, "j": j}} for j in range(3)])
        assert pq.migration_status().up_to_date
    assert None not in ids and len(set(ids)) == 50
    row = conn.execute(f'SELECT count(*) FROM "{schema}".job').fetchone()
    assert row == (50,)


async def test_a_worker_drains_jobs_and_waits_for_results(
    bouncer: tuple[str, str], schema: str
) -> None:
    mode, bounced = bouncer
    pq = AsyncPgQueue(bounced, schema=schema, maintenance=False, **options(mode))

    @pq.job("double")
    async def double(data: int) -> int:
        return data * 2

    async with pq:
        handles = [await double.send(i) for i in range(30)]
        async with working(pq, poll_interval=0.1):
            first = handles[0]
            assert first is not None
            assert await first.result(timeout=20) == 0
            await wait_until(
                lambda: _all_completed(pq, handles), what="every job completed", timeout=30
            )
        last = handles[-1]
        assert last is not None
        assert await last.result(timeout=5) == 58


async def _all_completed(pq: AsyncPgQueue, ids: list[Any]) -> bool:
    jobs = [await pq.get_job_by_id(i) for i in ids]
    return all(job is not None and job.state is JobState.completed for job in jobs)


def test_cron_and_maintenance_run_through_it(bouncer: tuple[str, str], schema: str) -> None:
    mode, bounced = bouncer
    with PgQueue(bounced, schema=schema, maintenance=False, **options(mode)) as pq:
        pq.create_queue("tick")
        pq.schedule("tick", "* * * * *", {"from": "cron"})
        pq.move_clock(120)
        sent = pq.run_schedules()
        assert len(sent) == 1
        for _ in range(6):  # more than psycopg's threshold for preparing
            assert pq.maintain() is not None
            pq.move_clock(60)
            pq.run_schedules()
        job = pq.get_job_by_id(sent[0])
        assert job is not None and job.data == {"from": "cron"}


async def test_a_running_job_is_cancelled_within_the_poll_interval_without_notify(
    bouncer: tuple[str, str], schema: str
) -> None:
    mode, bounced = bouncer
    # A long heartbeat: its beats (every 20 s) would find the cancellation far too late.
    pq = AsyncPgQueue(
        bounced, schema=schema, maintenance=False, prepare=prepared(mode), listen=False
    )
    started = asyncio.Event()
    seen: list[str] = []

    @pq.job("long")
    async def long(data: None, job: RunningJob) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async with pq:
        job_id = await long.send(None)
        assert job_id is not None
        async with working(pq, poll_interval=0.2, heartbeat_seconds=60):
            await asyncio.wait_for(started.wait(), 15)
            assert await pq.cancel(job_id) == [job_id]
            began = time.monotonic()
            await wait_until(lambda: _seen(seen), timeout=10, what="the handler cancelled")
            assert time.monotonic() - began < 5
        job = await pq.get_job_by_id(job_id)
        assert job is not None and job.state is JobState.cancelled


async def _seen(seen: list[str]) -> bool:
    return bool(seen)


def test_migrations_leave_no_lock_and_an_upgrade_does_not_hang(
    bouncer: tuple[str, str], schema: str, conn: psycopg.Connection[Any]
) -> None:
    mode, bounced = bouncer
    stmts = Statements(schema)
    with psycopg.connect(bounced, autocommit=True, prepare_threshold=None) as through:
        applied = run_sync(through, migrate_plan(stmts, target=latest_version() - 1))
        assert applied == list(range(1, latest_version()))
        assert run_sync(through, migrate_plan(stmts, target=latest_version() - 1)) == []
    assert migration_locks(conn, schema) == 0  # nothing left on a server connection
    done: list[list[int]] = []

    def upgrade() -> None:  # two starters at once, on several server connections
        with PgQueue(bounced, schema=schema, maintenance=False, **options(mode)) as pq:
            done.append(pq.migrate())

    threads = [threading.Thread(target=upgrade) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads), "the upgrade hangs"
    assert sorted(done) == [[], []]  # start() migrated: the last migration once, by one
    row = conn.execute(f'SELECT max(version) FROM "{schema}".version').fetchone()
    assert row == (latest_version(),)
    assert migration_locks(conn, schema) == 0


async def test_listening_through_it(
    bouncer: tuple[str, str], dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Session mode passes notifications on; transaction mode drops them, which the worker
    says once, and a listen_dsn straight to PostgreSQL brings them back."""
    mode, bounced = bouncer
    caplog.set_level(logging.WARNING, logger="pgqueue.worker")
    pq = AsyncPgQueue(bounced, schema=schema, maintenance=False, prepare=prepared(mode))
    ran = asyncio.Event()

    @pq.job("ping")
    async def ping(data: None) -> None:
        ran.set()

    async with pq:
        # A poll interval longer than the test: only a notification wakes the worker.
        if pool_mode(mode) == "transaction":
            async with working(pq, poll_interval=300):
                await wait_until(
                    lambda: _warned(caplog), timeout=15, what="the warning about LISTEN"
                )
            warnings = [r for r in caplog.records if "listen_dsn" in r.getMessage()]
            assert len(warnings) == 1
            pq._configure_connections(listen_dsn=dsn)
        async with working(pq, poll_interval=300):
            await ping.send(None)
            await asyncio.wait_for(ran.wait(), 10)


async def _warned(caplog: pytest.LogCaptureFixture, text: str = "listen_dsn") -> bool:
    return any(text in r.getMessage() for r in caplog.records)


async def test_results_arrive_whether_notifications_do_or_not(
    bouncer: tuple[str, str], schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The result listener listens through PgBouncer: in transaction mode it says once that
    nothing arrives, and its waiters look for themselves."""
    mode, bounced = bouncer
    caplog.set_level(logging.WARNING, logger="pgqueue")
    pq = AsyncPgQueue(bounced, schema=schema, maintenance=False, prepare=prepared(mode))

    @pq.job("echo")
    async def echo(data: str) -> str:
        return data

    async with pq:
        first = await echo.send("first")
        assert first is not None
        async with working(pq, poll_interval=0.1):
            assert await first.result(timeout=20) == "first"
            if pool_mode(mode) == "transaction":
                await wait_until(
                    lambda: _warned(caplog, "result listener"),
                    timeout=15,
                    what="the result listener's warning",
                )
            later = await echo.send("later")
            assert later is not None
            began = time.monotonic()
            assert await later.result(timeout=20) == "later"
            assert time.monotonic() - began < 3  # not the 5 s backstop
    warned = [r for r in caplog.records if "result listener" in r.getMessage()]
    assert len(warned) == (1 if pool_mode(mode) == "transaction" else 0)
