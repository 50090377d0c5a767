"""Producing and managing jobs on a real database: options, singletons, transactions, races."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql
from pydantic import BaseModel, Field

import pgqueue
from pgqueue import AsyncPgQueue, JobState, PgQueue
from pgqueue import _payload as payload_module
from pgqueue.testing import advance


def count_jobs(conn: psycopg.Connection[Any], schema: str, where: str = "true") -> int:
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {}.job WHERE " + where).format(sql.Identifier(schema))
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_priority_then_creation_order(pq: PgQueue) -> None:
    pq.create_queue("q")
    low = pq.send("q", "low", priority=-1)
    first = pq.send("q", "first")
    high = pq.send("q", "high", priority=10)
    second = pq.send("q", "second")
    assert [j.id for j in pq.fetch("q", 10)] == [high, first, second, low]


def test_queue_defaults_apply_when_options_are_left_out(pq: PgQueue) -> None:
    pq.create_queue("q", retry_limit=7, expire_in=30, retry_backoff=True)
    defaulted = pq.get_job_by_id(pq.send("q") or 0)
    chosen = pq.get_job_by_id(pq.send("q", retry_limit=1, expire_in=5) or 0)
    assert defaulted is not None and chosen is not None
    assert (defaulted.retry_limit, defaulted.expire_in, defaulted.retry_backoff) == (7, 30, True)
    assert (chosen.retry_limit, chosen.expire_in) == (1, 5)
    pq.update_queue("q", retry_limit=None)
    after = pq.get_job_by_id(pq.send("q") or 0)
    assert after is not None and after.retry_limit == 2  # the global default again
    queue = pq.get_queue("q")
    assert queue is not None and queue.expire_in == 30 and queue.retry_limit is None


def test_retry_backoff_grows_and_is_capped(pq: PgQueue) -> None:
    pq.create_queue("q")
    job_id = pq.send("q", retry_limit=6, retry_delay=10, retry_backoff=True, retry_delay_max=50)
    assert job_id is not None
    delays = []
    for _ in range(6):
        with psycopg.connect(pq.dsn or "", autocommit=True) as conn:
            conn.execute(
                sql.SQL("UPDATE {}.job SET start_after = now() WHERE id = %s").format(
                    sql.Identifier(pq.schema)
                ),
                (job_id,),
            )
        (job,) = pq.fetch("q")
        pq.fail(job.id, "boom")
        failed = pq.get_job_by_id(job_id)
        assert failed is not None and failed.state is JobState.retry
        assert failed.start_after is not None
        delays.append((failed.start_after - datetime.now(timezone.utc)).total_seconds())
    # Equal jitter: the n-th delay lies in [d*2^n/2, d*2^n], capped at 50.
    for n, delay in enumerate(delays):
        bound = min(50, 10 * 2**n)
        assert min(bound / 2, 50) - 1 <= delay <= bound + 0.5, (n, delay)
    assert delays[-1] <= 50.5


def test_fail_without_retries_left_fails_and_manual_retry_revives(pq: PgQueue) -> None:
    pq.create_queue("q")
    job_id = pq.send("q", retry_limit=0)
    pq.fetch("q")
    assert pq.fail(job_id or 0, ValueError("bad")) == [job_id]
    failed = pq.get_job_by_id(job_id or 0)
    assert failed is not None and failed.state is JobState.failed
    assert failed.output["type"] == "ValueError"
    assert pq.retry(job_id or 0) == [job_id]
    (again,) = pq.fetch("q")
    assert again.id == job_id
    assert pq.complete(job_id or 0, {"ok": 1}) == [job_id]
    assert pq.complete(job_id or 0, {"ok": 2}) == []  # completion is recorded once


def test_expired_jobs_can_be_retried_and_cancelled_ones_resumed(pq: PgQueue) -> None:
    pq.create_queue("q", expire_in=30, retry_limit=0)
    expired = pq.send("q")
    pq.fetch("q")
    pq.move_clock(31)
    assert pq.maintain().expired_active == 1
    assert pq.resume(expired or 0) == []  # resume is for cancelled jobs
    assert pq.retry(expired or 0) == [expired]
    (again,) = pq.fetch("q")
    assert (again.id, again.state, again.retry_limit) == (expired, JobState.active, 1)
    cancelled = pq.send("q")
    pq.cancel(cancelled or 0)
    assert pq.retry(cancelled or 0) == []  # retry is for failed and expired jobs
    assert pq.resume(cancelled or 0) == [cancelled]


def test_deferred_start_in_every_form(pq: PgQueue) -> None:
    pq.create_queue("q")
    now = datetime.now(timezone.utc)
    pq.send("q", "seconds", start_after=60)
    pq.send("q", "timedelta", start_after=timedelta(minutes=5))
    pq.send("q", "datetime", start_after=now + timedelta(hours=1))
    pq.send_after("q", "send_after", 30)
    ready = pq.send("q", "past", start_after=now - timedelta(seconds=1))
    assert [j.id for j in pq.fetch("q", 10)] == [ready]


def test_cancel_resume_delete(pq: PgQueue) -> None:
    pq.create_queue("q")
    job_id = pq.send("q") or 0
    assert pq.cancel(job_id) == [job_id]
    assert pq.fetch("q") == []
    assert pq.cancel(job_id) == []  # already cancelled
    assert pq.resume(job_id) == [job_id]
    assert [j.id for j in pq.fetch("q")] == [job_id]
    assert pq.delete_job(job_id) == [job_id]
    assert pq.get_job_by_id(job_id) is None


def test_get_job_by_id_finds_archived_jobs(pq: PgQueue, conn: psycopg.Connection[Any]) -> None:
    pq.create_queue("q")
    job_id = pq.send("q", {"x": 1}) or 0
    ident = sql.Identifier(pq.schema)
    conn.execute(
        sql.SQL(
            # Column by column, by name, whatever columns the archive has gained since.
            "WITH moved AS (DELETE FROM {0}.job WHERE id = %s RETURNING *) "
            "INSERT INTO {0}.archive SELECT (jsonb_populate_record(NULL::{0}.archive, "
            "to_jsonb(moved) || jsonb_build_object('archived_at', now(), "
            "'delete_at', now() + interval '1 day'))).* FROM moved"
        ).format(ident),
        (job_id,),
    )
    job = pq.get_job_by_id(job_id)
    assert job is not None and job.archived and job.data == {"x": 1}


def test_singleton_key_and_slots(pq: PgQueue) -> None:
    pq.create_queue("q")
    assert pq.send("q", singleton_key="a") is not None
    assert pq.send("q", singleton_key="a") is None
    assert pq.send("q", singleton_key="b") is not None
    assert pq.send("q", singleton_key="s", singleton_seconds=3600) is not None
    assert pq.send("q", singleton_key="s", singleton_seconds=3600) is None
    nxt = pq.send("q", singleton_key="s", singleton_seconds=3600, singleton_next_slot=True)
    assert nxt is not None
    job = pq.get_job_by_id(nxt)
    assert job is not None and job.start_after is not None and job.singleton_on is not None
    assert job.start_after == job.singleton_on  # the next slot's start
    assert job.start_after > datetime.now(timezone.utc)
    assert (
        pq.send("q", singleton_key="s", singleton_seconds=3600, singleton_next_slot=True) is None
    )  # both slots taken


def test_singleton_slots_are_per_key(pq: PgQueue, conn: psycopg.Connection[Any]) -> None:
    pq.create_queue("q")
    hour: dict[str, Any] = {"singleton_seconds": 3600}
    assert pq.send("q", singleton_key="a", **hour) is not None
    assert pq.send("q", singleton_key="b", **hour) is not None
    assert pq.send("q", singleton_key="a", **hour) is None
    assert count_jobs(conn, pq.schema) == 2
    # The slot holds while the job waits, runs or has finished within that slot.
    (job,) = pq.fetch("q")
    pq.complete(job.id)
    assert pq.send("q", singleton_key=job.singleton_key, **hour) is None


async def test_50_concurrent_async_singleton_sends_on_separate_connections(
    apq: AsyncPgQueue, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    await apq.create_queue("q")
    conns = [await psycopg.AsyncConnection.connect(dsn, autocommit=True) for _ in range(50)]
    try:
        ids = await asyncio.gather(*(apq.send("q", singleton_key="k", conn=c) for c in conns))
    finally:
        for c in conns:
            await c.close()
    assert len([i for i in ids if i is not None]) == 1
    assert count_jobs(conn, apq.schema) == 1


def test_50_concurrent_singleton_sends_create_one_job(
    dsn: str, schema: str, conn: psycopg.Connection[Any]
) -> None:
    with PgQueue(dsn, schema=schema, pool_max_size=50, pool_min_size=50) as pq:
        pq.create_queue("q")
        barrier = threading.Barrier(50)
        results: list[int | None] = []

        def send() -> None:
            barrier.wait()
            results.append(pq.send("q", singleton_key="only"))

        threads = [threading.Thread(target=send) for _ in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(results) == 50
    assert len([r for r in results if r is not None]) == 1
    assert count_jobs(conn, schema) == 1


def test_8_concurrent_fetchers_take_every_job_once(dsn: str, schema: str) -> None:
    with PgQueue(dsn, schema=schema, pool_max_size=10) as pq:
        pq.create_queue("q")
        for start in range(0, 10_000, 2_000):
            pq.insert([{"name": "q", "data": i} for i in range(start, start + 2_000)])
        taken: list[list[int]] = [[] for _ in range(8)]

        def fetch(slot: int) -> None:
            while batch := pq.fetch("q", 50):
                taken[slot] += [j.id for j in batch]

        threads = [threading.Thread(target=fetch, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    everything = [i for part in taken for i in part]
    assert len(everything) == 10_000
    assert len(set(everything)) == 10_000
    assert sum(1 for part in taken if part) > 1  # the work was really shared


def test_conn_send_exists_only_if_the_transaction_commits(
    pq: PgQueue, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    pq.create_queue("q")
    with psycopg.connect(dsn) as mine:
        pq.send("q", "rolled back", conn=mine)
        pq.insert([{"name": "q"}, {"name": "q"}], conn=mine)
        mine.rollback()
        assert count_jobs(conn, pq.schema) == 0
        kept = pq.send("q", "committed", conn=mine)
        mine.commit()
    job = pq.get_job_by_id(kept or 0)
    assert job is not None and job.data == "committed"
    assert count_jobs(conn, pq.schema) == 1


async def test_async_conn_send_rolls_back_with_the_caller(
    apq: AsyncPgQueue, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    await apq.create_queue("q")
    async with await psycopg.AsyncConnection.connect(dsn) as mine:
        await apq.send("q", conn=mine)
        await mine.rollback()  # the request failed
        async with mine.transaction():
            await apq.send("q", conn=mine)
    assert count_jobs(conn, apq.schema) == 1


async def test_async_insert_with_conn_commits_or_rolls_back(
    apq: AsyncPgQueue, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    await apq.create_queue("q")
    async with await psycopg.AsyncConnection.connect(dsn) as mine:
        await apq.insert([{"name": "q", "data": i} for i in range(3)], conn=mine)
        await apq.send_after("q", "later", 60, conn=mine)
        await mine.rollback()
        assert count_jobs(conn, apq.schema) == 0
        ids = await apq.insert([{"name": "q", "data": i} for i in range(3)], conn=mine)
        assert count_jobs(conn, apq.schema) == 0  # not visible before the commit
        await mine.commit()
    assert count_jobs(conn, apq.schema) == 3
    assert [(await apq.get_job_by_id(i or 0)) is not None for i in ids] == [True] * 3


async def test_wrong_connection_flavour_is_refused(apq: AsyncPgQueue, dsn: str) -> None:
    await apq.create_queue("q")
    with psycopg.connect(dsn) as sync_conn, pytest.raises(pgqueue.InvalidInputError):
        await apq.send("q", conn=sync_conn)  # type: ignore[arg-type]


def test_wrong_connection_flavour_is_refused_by_the_sync_queue(pq: PgQueue, dsn: str) -> None:
    pq.create_queue("q")

    async def attempt() -> None:
        async with await psycopg.AsyncConnection.connect(dsn) as async_conn:
            with pytest.raises(pgqueue.InvalidInputError, match="sync"):
                pq.send("q", conn=async_conn)  # type: ignore[arg-type]
            with pytest.raises(pgqueue.InvalidInputError):
                pq.insert([{"name": "q"}], conn=async_conn)  # type: ignore[arg-type]

    asyncio.run(attempt())
    assert pq.fetch("q") == []


def test_missing_queue_refuses_the_whole_batch(pq: PgQueue, conn: psycopg.Connection[Any]) -> None:
    pq.create_queue("q")
    with pytest.raises(pgqueue.QueueNotFoundError, match="'nope'"):
        pq.insert([{"name": "q"}, {"name": "nope"}])
    with pytest.raises(pgqueue.QueueNotFoundError, match="'nope'"):
        pq.send("nope")
    with pytest.raises(pgqueue.QueueNotFoundError, match="'gone'"):
        pq.send("q", dead_letter="gone")
    assert count_jobs(conn, pq.schema) == 0


@pytest.mark.parametrize(
    ("name", "data", "options", "error", "culprit"),
    [
        ("bad name!", None, {}, pgqueue.InvalidNameError, "bad name!"),
        ("", None, {}, pgqueue.InvalidNameError, "''"),
        ("x" * 101, None, {}, pgqueue.InvalidNameError, "x" * 101),
        ("q", None, {"priorty": 1}, pgqueue.InvalidOptionError, "priorty"),
        ("q", None, {"retry_limit": -1}, pgqueue.InvalidOptionError, "retry_limit"),
        ("q", None, {"expire_in": "soon"}, pgqueue.InvalidOptionError, "expire_in"),
        ("q", None, {"start_after": "tomorrow"}, pgqueue.InvalidOptionError, "start_after"),
        ("q", None, {"start_after": datetime(2030, 1, 1)}, pgqueue.InvalidOptionError, "timezone"),
        ("q", None, {"priority": 2**40}, pgqueue.InvalidOptionError, "priority"),
        ("q", {"x": object()}, {}, pgqueue.InvalidPayloadError, "object"),
        ("q", {"x": float("nan")}, {}, pgqueue.InvalidPayloadError, "JSON"),
        ("q", {"x": "a\x00b"}, {}, pgqueue.InvalidPayloadError, "NUL"),
    ],
)
def test_bad_input_raises_a_typed_error_and_writes_nothing(
    pq: PgQueue,
    conn: psycopg.Connection[Any],
    name: str,
    data: Any,
    options: dict[str, Any],
    error: type[Exception],
    culprit: str,
) -> None:
    pq.create_queue("q")
    with pytest.raises(error) as raised:
        pq.send(name, data, **options)
    assert culprit in str(raised.value)
    with pytest.raises(error):
        pq.insert([{"name": "q"}, {"name": name, "data": data, **options}])
    assert count_jobs(conn, pq.schema) == 0


JSON = st.recursive(
    # jsonb keeps numbers as numeric: 1e16 comes back as the int 10000000000000000.
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, min_value=-1e15, max_value=1e15)
    | st.text().filter(lambda s: "\x00" not in s),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8).filter(lambda s: "\x00" not in s), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=JSON)
def test_any_json_payload_round_trips(pq: PgQueue, value: Any) -> None:
    pq.create_queue("q")
    job = pq.get_job_by_id(pq.send("q", value) or 0)
    assert job is not None and job.data == value


def test_payloads_postgres_would_refuse_are_refused_first(
    pq: PgQueue, conn: psycopg.Connection[Any]
) -> None:
    pq.create_queue("q")
    assert pq.get_job_by_id(pq.send("q", "\\u0000") or 0) is not None  # escaped: fine
    for bad, culprit in (
        ("\ud800", "surrogate"),
        ({"k": "a\x00"}, "NUL"),
        ({"x": object()}, "object"),
    ):
        with pytest.raises(pgqueue.InvalidPayloadError, match=culprit):
            pq.send("q", bad)
    assert count_jobs(conn, pq.schema) == 1


def test_bad_queue_input_writes_nothing(pq: PgQueue, conn: psycopg.Connection[Any]) -> None:
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"name": "no spaces"}, pgqueue.InvalidNameError, "'no spaces'"),
        ({"name": "q", "retry_limit": -1}, pgqueue.InvalidOptionError, "retry_limit"),
        ({"name": "q", "priority": 1}, pgqueue.InvalidOptionError, "priority"),
        ({"name": "q", "dead_letter": "x y"}, pgqueue.InvalidOptionError, "dead_letter"),
        ({"name": "q", "policy": "lifo"}, pgqueue.InvalidOptionError, "policy"),
    ]
    for kwargs, error, culprit in cases:
        with pytest.raises(error, match=culprit):
            pq.create_queue(**kwargs)
    for bad_id in ("1", 1.5, None):
        with pytest.raises(pgqueue.InvalidInputError):
            pq.cancel(bad_id)  # type: ignore[arg-type]
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {}.queue").format(sql.Identifier(pq.schema))
    ).fetchone()
    assert row == (0,)


def test_pydantic_models_are_accepted_as_data(pq: PgQueue) -> None:
    from pydantic import BaseModel

    class Point(BaseModel):
        x: int
        when: datetime

    pq.create_queue("q")
    at = datetime(2030, 1, 2, tzinfo=timezone.utc)
    job = pq.get_job_by_id(pq.send("q", Point(x=1, when=at)) or 0)
    assert job is not None and job.data == {"x": 1, "when": "2030-01-02T00:00:00Z"}


async def test_queue_crud(apq: AsyncPgQueue) -> None:
    assert await apq.create_queue("q", policy="short", description="things") is True
    assert await apq.create_queue("q") is False
    info = await apq.get_queue("q")
    assert info is not None and info.policy == "short" and info.description == "things"
    await apq.update_queue("q", policy="standard", dead_letter=None)
    assert [q.name for q in await apq.get_queues()] == ["q"]
    await apq.send("q")
    assert await apq.delete_queue("q") is True
    assert await apq.get_queue("q") is None
    with pytest.raises(pgqueue.QueueNotFoundError):
        await apq.update_queue("q", retry_limit=1)
    with pytest.raises(pgqueue.InvalidOptionError, match="policy"):
        await apq.create_queue("p", policy="weird")
    with pytest.raises(pgqueue.QueueNotFoundError, match="'missing'"):
        await apq.create_queue("p", dead_letter="missing")


async def test_sends_racing_a_late_registration_get_ids(dsn: str, schema: str) -> None:
    # A handler registered after start() has its queue declared by the first call that
    # needs it; sends arriving meanwhile wait for that declaration, never return None.
    async with AsyncPgQueue(dsn, schema=schema, pool_max_size=20) as pq:
        for round_ in range(10):
            name = f"late-{round_}"
            pq.job(name)(_noop)
            ids = await asyncio.gather(*(pq.send(name, i) for i in range(20)))
            assert all(isinstance(i, int) for i in ids), ids


def test_sync_sends_racing_a_late_registration_get_ids(dsn: str, schema: str) -> None:
    with PgQueue(dsn, schema=schema, pool_max_size=20) as pq:
        for round_ in range(10):
            name = f"late-{round_}"
            pq.job(name)(_noop)
            ids = run_in_threads(20, lambda i, name=name: pq.send(name, i))
            assert all(isinstance(i, int) for i in ids), ids


def _noop(data: Any) -> None:
    pass


def run_in_threads(count: int, action: Any) -> list[Any]:
    """``action(i)`` for i in range(count), each on its own thread, started together."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = action(i)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_sends_by_name_get_the_handlers_defaults(pq: PgQueue) -> None:
    @pq.job("prio", priority=7, singleton_key="only")
    def prio(data: Any) -> None:
        pass

    first = pq.send("prio", 1)
    job = pq.get_job_by_id(first or 0)
    assert job is not None and (job.priority, job.singleton_key) == (7, "only")
    assert pq.send("prio", 2) is None  # the handler's singleton key blocks it
    assert pq.send("prio", 3, singleton_key="other") is not None  # the caller's option wins
    assert [job_id is not None for job_id in pq.insert([{"name": "prio", "data": 4}])] == [False]


async def test_many_concurrent_async_senders(apq: AsyncPgQueue) -> None:
    await apq.create_queue("q")
    ids = await asyncio.gather(*(apq.send("q", i) for i in range(200)))
    assert len(set(ids)) == 200


class Aliased(BaseModel):
    user_id: int = Field(alias="userId")


def test_data_of_a_model_with_aliases_round_trips_to_its_handler(dsn: str, schema: str) -> None:
    pq = PgQueue(dsn, schema=schema, maintenance=False)  # the test runs the schedule itself
    seen: list[int] = []

    @pq.job("aliased", retry_limit=0)
    def aliased(data: Aliased) -> None:
        seen.append(data.user_id)

    with pq:
        pq.send("aliased", {"userId": 5})
        aliased.send(Aliased(userId=6))
        pq.create_queue("plain")
        pq.schedule("aliased", "* * * * *", {"userId": 7})
        drained = advance(pq, 60)
        assert len(drained.scheduled) == 1
    assert sorted(seen) == [5, 6, 7] and not drained.failed


def test_huge_numbers_are_refused_with_a_typed_error(pq: PgQueue) -> None:
    pq.create_queue("q")
    for call in (
        lambda: pq.move_clock(10**400),
        lambda: pq.send_after("q", None, 10**400),
        lambda: pq.send("q", start_after=10**400),
        lambda: pq.insert([{"name": "q", "start_after": 10**400}]),
    ):
        with pytest.raises(pgqueue.InvalidInputError):
            call()


def test_redrive_limits_and_payload_sizes_get_typed_errors(
    pq: PgQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    pq.create_queue("dlq")
    for limit in (-1, 0, "x", True, 2**31):
        with pytest.raises(pgqueue.InvalidInputError, match="limit"):
            pq.redrive("dlq", limit=limit)  # type: ignore[arg-type]
    # Past what a job may hold (200 MiB; here lowered, not to build one): refused before
    # anything is sent, rather than failing on the wire.
    monkeypatch.setattr(payload_module, "MAX_PAYLOAD_BYTES", 1000)
    with pytest.raises(pgqueue.InvalidPayloadError, match="at most 1,000"):
        pq.send("dlq", "x" * 2000)
