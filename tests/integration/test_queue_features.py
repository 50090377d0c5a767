"""Policies, throttling, pub/sub, queue management and maintenance on a real database."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

import pgqueue
from pgqueue import AsyncPgQueue, JobState, MaintenanceSettings, PgQueue


def run_concurrently(count: int, action: Any) -> list[Any]:
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(i: int) -> None:
        barrier.wait()
        results[i] = action(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def states(conn: psycopg.Connection[Any], schema: str, name: str) -> dict[str, int]:
    rows = conn.execute(
        sql.SQL("SELECT state::text, count(*) FROM {}.job WHERE name = %s GROUP BY 1").format(
            sql.Identifier(schema)
        ),
        (name,),
    ).fetchall()
    return {r[0]: r[1] for r in rows}


@pytest.fixture
def big_pq(dsn: str, schema: str) -> Any:
    with PgQueue(dsn, schema=schema, pool_min_size=2, pool_max_size=50) as pq:
        yield pq


@pytest.mark.parametrize("key", [None, "k"])
def test_short_policy_keeps_one_queued_job(
    big_pq: PgQueue, conn: psycopg.Connection[Any], key: str | None
) -> None:
    big_pq.create_queue("short", policy="short")
    ids = run_concurrently(50, lambda i: big_pq.send("short", i, singleton_key=key))
    assert len([i for i in ids if i is not None]) == 1
    assert states(conn, big_pq.schema, "short") == {"created": 1}
    (job,) = big_pq.fetch("short")
    # Once it runs, one more may queue.
    assert big_pq.send("short", singleton_key=key) is not None
    assert big_pq.send("short", singleton_key=key) is None
    assert job.state is JobState.active


@pytest.mark.parametrize("policy", ["singleton", "stately"])
def test_one_active_job_per_key_under_concurrent_fetchers(
    big_pq: PgQueue, conn: psycopg.Connection[Any], policy: str
) -> None:
    big_pq.create_queue("p", policy=policy)
    keys = ["a", "b"]
    sent = run_concurrently(50, lambda i: big_pq.send("p", i, singleton_key=keys[i % 2]))
    if policy == "stately":  # at most one queued per key
        assert len([s for s in sent if s is not None]) == 2
    else:
        assert all(s is not None for s in sent)
    for _ in range(3):
        fetched = run_concurrently(4, lambda i: big_pq.fetch("p", 10))
        claimed = [j for batch in fetched for j in batch]
        counts = states(conn, big_pq.schema, "p")
        assert counts.get("active", 0) <= 2
        assert len({j.singleton_key for j in claimed}) == len(claimed)
        for job in claimed:
            big_pq.complete(job.id)
    assert big_pq.fetch("p", 10) == [] or policy == "singleton"


def test_throttle_and_debounce_windows_follow_a_moved_clock(pq: PgQueue) -> None:
    # A day ahead, 10 s into a minute: slots are cut from the schema's clock.
    window = (pq.now() + timedelta(days=1)).replace(second=0, microsecond=0)
    pq.set_clock(window + timedelta(seconds=10))
    pq.create_queue("t")

    first = pq.send_throttled("t", 1, seconds=60)
    assert first is not None
    assert pq.send_throttled("t", 2, seconds=60) is None  # same window: dropped
    assert pq.send_throttled("t", 3, seconds=60, key="other") is not None  # its own key
    pq.set_clock(window + timedelta(seconds=59.5))
    assert pq.send_throttled("t", 4, seconds=60) is None  # still the same window
    pq.set_clock(window + timedelta(seconds=60))
    assert pq.send_throttled("t", 5, seconds=60) is not None  # the next one
    assert pq.send_throttled("t", 6, seconds=60) is None

    pq.create_queue("d")
    pq.set_clock(window + timedelta(minutes=5, seconds=10))
    base = window + timedelta(minutes=5)
    assert pq.send_debounced("d", 1, seconds=60) is not None  # this window
    later = pq.send_debounced("d", 2, seconds=60)  # window taken: the next one
    assert pq.send_debounced("d", 3, seconds=60) is None  # both windows taken
    pq.set_clock(base + timedelta(seconds=60))  # the second window is now the current one
    latest = pq.send_debounced("d", 4, seconds=60)  # taken: goes to the third
    starts = [j.start_after for j in map(pq.get_job_by_id, (later or 0, latest or 0)) if j]
    assert starts == [base + timedelta(seconds=60), base + timedelta(seconds=120)]


async def test_publish_fans_out_inside_the_callers_transaction(
    apq: AsyncPgQueue, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    for queue in ("thumbnail", "virus-scan", "audit"):
        await apq.create_queue(queue)
        assert await apq.subscribe("file.uploaded", queue) is True
    assert await apq.subscribe("file.uploaded", "audit") is False
    async with await psycopg.AsyncConnection.connect(dsn) as mine:
        assert len(await apq.publish("file.uploaded", {"f": 1}, conn=mine)) == 3
        await mine.rollback()
    assert states(conn, apq.schema, "thumbnail") == {}
    ids = await apq.publish("file.uploaded", {"f": 2}, priority=3)
    assert len(ids) == 3
    jobs = [await apq.get_job_by_id(i) for i in ids]
    assert sorted(j.name for j in jobs if j) == ["audit", "thumbnail", "virus-scan"]
    assert all(j is not None and j.data == {"f": 2} and j.priority == 3 for j in jobs)
    assert await apq.unsubscribe("file.uploaded", "audit") is True
    assert len(await apq.publish("file.uploaded")) == 2
    assert await apq.publish("nobody.listens") == []
    assert ("file.uploaded", "thumbnail") in await apq.get_subscriptions()
    with pytest.raises(pgqueue.QueueNotFoundError):
        await apq.subscribe("e", "no-such-queue")
    with pytest.raises(pgqueue.InvalidNameError):
        await apq.publish("bad event!")


def test_pause_purge_and_stats(pq: PgQueue) -> None:
    pq.create_queue("q")
    pq.insert([{"name": "q", "data": i} for i in range(5)])
    pq.pause_queue("q")
    assert pq.fetch("q", 10) == []
    assert pq.send("q") is not None  # sends still work
    pq.resume_queue("q")
    (one,) = pq.fetch("q")
    pq.complete(one.id)
    (stats,) = pq.get_queue_stats("q")
    assert stats.counts[JobState.completed] == 1
    assert stats.waiting == 5 and stats.active == 0
    assert stats.oldest_waiting_seconds is not None and stats.oldest_waiting_seconds >= 0
    assert pq.purge_queue("q") == 5
    (after,) = pq.get_queue_stats("q")
    assert after.waiting == 0 and after.oldest_waiting_seconds is None
    with pytest.raises(pgqueue.QueueNotFoundError):
        pq.pause_queue("missing")


def test_dead_letter_redrive(pq: PgQueue) -> None:
    pq.create_queue("dlq")
    pq.create_queue("work", dead_letter="dlq", retry_limit=0)
    job_id = pq.send("work", {"n": 1})
    pq.fetch("work")
    pq.fail(job_id or 0, "broken")
    (dead,) = pq.fetch("dlq", 1)
    pq.fail(dead.id, "keep")  # a DLQ job that was looked at and failed stays put
    pq.send("dlq")  # no source: not redriven
    pq.create_queue("dlq2")
    pq.create_queue("work2", dead_letter="dlq2", retry_limit=0)
    other = pq.send("work2", {"n": 2}, group="tenant")
    pq.fetch("work2")
    pq.fail(other or 0, "broken")
    (new_id,) = pq.redrive("dlq2")
    job = pq.get_job_by_id(new_id)
    assert job is not None and job.name == "work2" and job.data == {"n": 2}
    assert job.state is JobState.created and job.group == "tenant"  # kept through both


def test_maintenance_expires_archives_and_deletes(
    dsn: str, schema: str, conn: psycopg.Connection[Any]
) -> None:
    settings = MaintenanceSettings(archive_completed_after=60, archive_failed_after=600)
    with PgQueue(dsn, schema=schema, maintenance=False) as pq:  # the test runs each pass
        pq.maintenance_settings = settings
        pq.create_queue("q")
        done, failed, stale, waiting = (pq.send("q", i) for i in range(4))
        beating = pq.send("q", heartbeat_seconds=5, retry_limit=0)
        jobs = {j.id: j for j in pq.fetch("q", 10)}
        assert set(jobs) == {done, failed, stale, waiting, beating}
        pq.complete(done or 0)
        pq.fail(failed or 0, "x")  # retry_limit 2: goes to retry
        pq.resume(pq.cancel(waiting or 0))  # back to created
        late = pq.send("q", retention=30)
        # 10 minutes later: 'stale' ran past nothing yet (expire_in 900), the heartbeat
        # of 'beating' is long stale, 'late' waited past its retention.
        pq.move_clock(timedelta(minutes=10))
        result = pq.maintain()
        assert result.ran and result.expired_active == 1 and result.expired_waiting >= 1
        assert result.archived == 1  # the completed job, older than 60 s
        beat = pq.get_job_by_id(beating or 0)
        assert beat is not None and beat.state is JobState.expired
        archived = pq.get_job_by_id(done or 0)
        assert archived is not None and archived.archived
        late_job = pq.get_job_by_id(late or 0)
        assert late_job is not None and late_job.state is JobState.expired
        # Past expire_in (900 s) for the active 'stale' job: it returns to retry.
        pq.move_clock(timedelta(minutes=10))
        second = pq.maintain()
        stale_job = pq.get_job_by_id(stale or 0)
        assert stale_job is not None and stale_job.state is JobState.retry
        assert second.expired_active == 1
        # The two expired ten minutes ago are past archive_failed_after (600 s).
        assert second.archived == 2
        # Archived jobs are deleted after delete_after (a week by default).
        pq.move_clock(timedelta(days=6))
        assert pq.maintain().deleted == 0
        pq.move_clock(timedelta(days=2))
        assert pq.maintain().deleted == 3
        assert pq.get_job_by_id(done or 0) is None
        assert pq.maintain().archived == 0  # nothing done twice


def test_maintenance_runs_once_at_a_time(dsn: str, schema: str) -> None:
    with PgQueue(dsn, schema=schema, maintenance=False) as pq:
        with psycopg.connect(dsn) as holder:
            holder.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"pgqueue.maintain.{schema}",)
            )
            assert pq.maintain().ran is False  # another instance holds the pass
        assert pq.maintain().ran is True


async def test_periodic_maintenance_runs_once_per_interval_across_instances(
    dsn: str, schema: str
) -> None:
    interval = 0.25
    settings = MaintenanceSettings(interval=interval, monitor_interval=3600)
    tries: list[float] = []
    ran: list[float] = []
    enough = asyncio.Event()
    instances = [AsyncPgQueue(dsn, schema=schema, maintenance=settings) for _ in range(3)]

    def noting(result: pgqueue.MaintenanceResult) -> None:
        ended = time.monotonic()  # a pass's transaction committed just before this
        tries.append(ended)
        if len(tries) >= 30:
            enough.set()
        if result.ran:
            ran.append(ended)

    for pq in instances:
        pq.on("maintenance", noting)
    for pq in instances:
        await pq.start()
    try:
        await asyncio.wait_for(enough.wait(), 20)
    finally:
        for pq in instances:
            await pq.stop()
    assert len(tries) >= 30  # three instances tried about four times a second each
    gaps = [b - a for a, b in itertools.pairwise(ran)]
    assert len(ran) >= 3 and min(gaps) >= interval * 0.8, gaps
    assert len(ran) <= (tries[-1] - tries[0]) / interval + 2  # one pass per interval
    # maintain() on demand does not wait for the interval.
    async with AsyncPgQueue(dsn, schema=schema, maintenance=False) as pq:
        assert (await pq.maintain()).ran and (await pq.maintain()).ran


def test_stats_are_counted_only_for_someone_who_looks(
    dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    import queue as stdlib_queue

    caplog.set_level("WARNING", logger="pgqueue")
    ticks: stdlib_queue.Queue[str] = stdlib_queue.Queue()
    settings = MaintenanceSettings(interval=0.02, monitor_interval=0)
    pq = PgQueue(dsn, schema=schema, maintenance=settings)
    counted = pq.get_queue_stats

    def counting_stats(name: str | None = None) -> list[pgqueue.QueueStats]:
        ticks.put("stats")
        return counted(name)

    pq.get_queue_stats = counting_stats  # type: ignore[method-assign,assignment]
    pq.on("maintenance", lambda result: ticks.put("maintain"))
    with pq:
        seen = [ticks.get(timeout=10) for _ in range(5)]
        assert seen == ["maintain"] * 5  # no monitor, INFO off: nothing counted
        pq.add_monitor(lambda stats: None)
        while ticks.get(timeout=10) != "stats":
            pass


def test_monitor_receives_queue_stats(dsn: str, schema: str) -> None:
    import queue as stdlib_queue

    reports: stdlib_queue.Queue[list[pgqueue.QueueStats]] = stdlib_queue.Queue()
    settings = MaintenanceSettings(interval=0.05, monitor_interval=0)
    with PgQueue(dsn, schema=schema, maintenance=settings) as pq:
        pq.add_monitor(reports.put)
        pq.create_queue("watched")
        pq.send("watched")
        deadline = 50
        while deadline:
            stats = {s.name: s for s in reports.get(timeout=10)}
            if "watched" in stats and stats["watched"].waiting == 1:
                break
            deadline -= 1
        assert deadline, "no report showed the waiting job"


def test_absurd_values_in_rows_never_break_maintenance(
    pq: PgQueue, conn: psycopg.Connection[Any]
) -> None:
    # Rows written by hand or by an older version, with values no option allows now.
    schema = sql.Identifier(pq.schema)
    pq.create_queue("q", expire_in=60, retry_limit=1)
    ids = pq.insert([{"name": "q", "data": i} for i in range(5)])
    conn.execute(
        sql.SQL(
            "UPDATE {}.job SET expire_in = 1e308, heartbeat_seconds = 1e16, retry_delay = 1e16, "
            "retry_backoff = true, retry_count = 0, delete_after = 1e16 WHERE id <> %s"
        ).format(schema),
        (ids[-1],),
    )
    pq.fetch("q", 5)
    pq.move_clock(3600)
    result = pq.maintain()  # the sane job expires; the absurd ones neither fail nor expire
    assert result.errors == [] and result.expired_active == 1
    # Absurd retry delays and retention still give times in range.
    conn.execute(sql.SQL("UPDATE {}.job SET expire_in = 1 WHERE id = %s").format(schema), (ids[0],))
    pq.move_clock(2)
    assert pq.maintain().expired_active == 1
    job = pq.get_job_by_id(ids[0] or 0)
    assert job is not None and job.state is JobState.retry


def test_a_failing_maintenance_step_stops_no_other(
    pq: PgQueue, conn: psycopg.Connection[Any]
) -> None:
    schema = sql.Identifier(pq.schema)
    pq.maintenance_settings = MaintenanceSettings(archive_completed_after=0)
    pq.create_queue("q", expire_in=30)
    done, running = pq.send("q", "done"), pq.send("q", "running")
    (first,) = pq.fetch("q")
    pq.complete(first)
    pq.fetch("q")
    # A row already in the archive under the same id: archiving it cannot succeed.
    conn.execute(
        sql.SQL(
            "INSERT INTO {0}.archive (id, name, state, keep_until, priority, retry_count, "
            "retry_limit, retry_delay, retry_backoff, expire_in, delete_after, start_after, "
            "created_at, policy, archived_at, delete_at) SELECT id, name, state, keep_until, "
            "priority, retry_count, retry_limit, retry_delay, retry_backoff, expire_in, "
            "delete_after, start_after, created_at, policy, now(), now() + interval '1 day' "
            "FROM {0}.job WHERE id = %s"
        ).format(schema),
        (done,),
    )
    pq.move_clock(31)
    result = pq.maintain()
    assert result.ran and result.archived == 0
    assert [e.split(":")[0] for e in result.errors] == ["archived"]
    assert result.expired_active == 1  # the step before it ran
    job = pq.get_job_by_id(running or 0)
    assert job is not None and job.state is JobState.retry


def test_queue_limits_are_kept_shown_and_cleared(pq: PgQueue) -> None:
    assert pq.create_queue("api", concurrency=3, rate_limit=(50, timedelta(seconds=1)))
    info = pq.get_queue("api")
    assert info is not None and info.concurrency == 3 and info.rate_limit == (50, 1.0)
    for bad in ({"concurrency": 0}, {"rate_limit": (0, 1)}, {"rate_limit": (5, -1)}):
        with pytest.raises(pgqueue.InvalidOptionError):
            pq.update_queue("api", **bad)
    assert pq.get_queue("api") == info  # a refused change writes nothing
    pq.update_queue("api", rate_limit=(10, 60))
    info = pq.get_queue("api")
    assert info is not None and info.concurrency == 3 and info.rate_limit == (10, 60.0)
    pq.update_queue("api", concurrency=None, rate_limit=None)
    info = pq.get_queue("api")
    assert info is not None and info.concurrency is None and info.rate_limit is None


def test_fetch_claims_within_a_queues_concurrency(pq: PgQueue) -> None:
    pq.create_queue("api", concurrency=3)
    pq.insert([{"name": "api", "data": i} for i in range(10)])
    first = pq.fetch("api", 10)
    assert [j.data for j in first] == [0, 1, 2]
    assert pq.fetch("api", 10) == []  # three are active: the limit
    (stats,) = pq.get_queue_stats("api")
    assert stats.active == 3 and stats.concurrency == 3
    pq.complete(first[0].id)
    assert [j.data for j in pq.fetch("api", 10)] == [3]
    pq.update_queue("api", concurrency=5)
    assert [j.data for j in pq.fetch("api", 10)] == [4, 5]


def test_concurrent_fetchers_share_a_queues_concurrency(pq: PgQueue) -> None:
    pq.create_queue("api", concurrency=5)
    pq.insert([{"name": "api"} for _ in range(50)])
    claimed = run_concurrently(8, lambda i: len(pq.fetch("api", 3)))
    assert sum(claimed) == 5


def test_a_rate_limit_counts_starts_on_the_database_clock(pq: PgQueue) -> None:
    start = (pq.now() + timedelta(days=1)).replace(microsecond=0)
    pq.set_clock(start)
    pq.create_queue("rated", rate_limit=(5, 3600))
    pq.insert([{"name": "rated", "data": i} for i in range(12)])
    assert len(pq.fetch("rated", 3)) == 3
    assert len(pq.fetch("rated", 10)) == 2
    assert pq.fetch("rated", 10) == []  # five started in this hour
    (stats,) = pq.get_queue_stats("rated")
    assert stats.rate_limit == (5, 3600.0) and stats.rate_left == 0
    pq.set_clock(start + timedelta(seconds=3599))
    assert pq.fetch("rated", 10) == []  # the window still holds all five
    pq.set_clock(start + timedelta(seconds=3601))
    assert len(pq.fetch("rated", 10)) == 5  # the first five left the window together
    (stats,) = pq.get_queue_stats("rated")
    assert stats.rate_left == 0 and stats.waiting == 2


async def test_a_limit_set_while_a_worker_runs_holds_at_once(apq: AsyncPgQueue) -> None:
    running = peak = 0
    gate = asyncio.Event()

    @apq.job("q")
    async def q(data: Any) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await gate.wait()
        running -= 1

    await apq.start()
    task = asyncio.create_task(apq.work(poll_interval=30))
    await q.send()
    await _until(lambda: running == 1)
    # The worker read the queue unlimited; its next claims must still respect the limit.
    await apq.update_queue("q", concurrency=1)
    await apq.insert([{"name": "q"} for _ in range(5)])
    (stats,) = await apq.get_queue_stats("q")
    assert stats.waiting == 5 and stats.active == 1
    gate.set()

    async def all_done() -> bool:
        (stats,) = await apq.get_queue_stats("q")
        return stats.counts[JobState.completed] == 6

    deadline = time.monotonic() + 15  # well within the worker's 30 s poll: told, not polled
    while not await all_done():
        assert time.monotonic() < deadline, "the jobs did not run"
        await asyncio.sleep(0.02)
    apq.stop_working()
    await asyncio.wait_for(task, 15)
    assert peak == 1


async def _until(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_group_concurrency_caps_each_group_and_claims_fairly(pq: PgQueue) -> None:
    pq.create_queue("tenants", group_concurrency=2)
    pq.insert([{"name": "tenants", "data": f"a{i}", "group": "a"} for i in range(50)])
    pq.insert([{"name": "tenants", "data": f"b{i}", "group": "b"} for i in range(3)])
    pq.insert([{"name": "tenants", "data": f"none{i}"} for i in range(3)])
    first = pq.fetch("tenants", 3)
    # One job of each group before a second of any: a's backlog delays b by nothing.
    assert sorted(j.data for j in first) == ["a0", "b0", "none0"]
    assert {j.group for j in first} == {"a", "b", ""}  # sent without one: group ""
    second = pq.fetch("tenants", 10)
    assert sorted(j.data for j in second) == ["a1", "b1", "none1"]  # two each: the cap
    assert pq.fetch("tenants", 10) == []
    pq.complete(next(j.id for j in first if j.data == "a0"))
    assert [j.data for j in pq.fetch("tenants", 10)] == ["a2"]
    job = pq.get_job_by_id(first[0].id)
    assert job is not None and job.group == first[0].group
    (stats,) = pq.get_queue_stats("tenants")
    assert stats.group_concurrency == 2
    assert stats.groups == {"a": (47, 2, None), "b": (1, 2, None), "": (1, 2, None)}
    assert stats.groups["a"].waiting == 47 and stats.groups["a"].active == 2
    assert list(stats.groups) == ["a", "", "b"]  # most waiting first


def test_a_group_with_running_jobs_yields_to_a_group_with_none(pq: PgQueue) -> None:
    pq.create_queue("tenants", group_concurrency=100)
    pq.insert([{"name": "tenants", "data": f"a{i}", "group": "a"} for i in range(1000)])
    assert len(pq.fetch("tenants", 5)) == 5  # a's five running
    pq.send("tenants", "b0", group="b")
    assert [j.data for j in pq.fetch("tenants", 1)] == ["b0"]  # first, though sent last


def test_an_ordered_queue_runs_a_groups_jobs_one_at_a_time_in_order(pq: PgQueue) -> None:
    start = (pq.now() + timedelta(days=1)).replace(microsecond=0)
    pq.set_clock(start)
    pq.create_queue("ordered", ordered=True, retry_delay=60, retry_limit=1)
    pq.insert([{"name": "ordered", "data": f"{g}{i}", "group": g} for g in "ab" for i in range(3)])
    first = pq.fetch("ordered", 10)
    assert sorted(j.data for j in first) == ["a0", "b0"]
    assert pq.fetch("ordered", 10) == []  # one at a time per group
    a0, b0 = sorted(first, key=lambda j: str(j.data))
    pq.fail(a0.id, {"boom": True})  # to retry in 60 s: it holds a1 and a2 back
    pq.complete(b0.id)
    assert [j.data for j in pq.fetch("ordered", 10)] == ["b1"]
    pq.set_clock(start + timedelta(seconds=61))
    assert [j.data for j in pq.fetch("ordered", 10)] == ["a0"]  # a0 again, before a1


def test_groups_and_one_per_key_policies_do_not_mix(pq: PgQueue) -> None:
    with pytest.raises(pgqueue.InvalidOptionError, match="group_concurrency"):
        pq.create_queue("s", policy="singleton", group_concurrency=2)
    assert pq.get_queue("s") is None
    pq.create_queue("s", policy="stately")
    with pytest.raises(pgqueue.InvalidOptionError, match="ordered"):
        pq.update_queue("s", ordered=True)
    info = pq.get_queue("s")
    assert info is not None and not info.ordered and info.group_concurrency is None


async def test_a_full_concurrency_limit_is_tried_again_soon_whatever_the_rate_limit(
    apq: AsyncPgQueue,
) -> None:
    done: list[int] = []

    @apq.job("api")
    async def api(data: int) -> None:
        done.append(data)

    await apq.start()
    await apq.update_queue("api", concurrency=1, rate_limit=(600, 3600))
    await apq.insert([{"name": "api", "data": i} for i in range(3)])
    (held,) = await apq.fetch("api")  # the one slot, taken by a manual consumer
    listening = asyncio.Event()
    apq.on("listening", lambda _: listening.set())
    task = asyncio.create_task(apq.work(poll_interval=30))
    await asyncio.wait_for(listening.wait(), 15)
    await asyncio.sleep(0.3)  # time for the worker to find the slot taken (the rate has room)
    await apq.complete(held.id)
    await _until(lambda: len(done) == 2, timeout=5)  # not the rate window's hour
    apq.stop_working()
    await asyncio.wait_for(task, 15)


async def test_clearing_a_rate_limit_wakes_a_worker_waiting_on_it(apq: AsyncPgQueue) -> None:
    done: list[int] = []

    @apq.job("api")
    async def api(data: int) -> None:
        done.append(data)

    await apq.start()
    await apq.update_queue("api", rate_limit=(1, 3600))
    await apq.insert([{"name": "api", "data": i} for i in range(3)])
    task = asyncio.create_task(apq.work(poll_interval=30))
    await _until(lambda: len(done) == 1)
    await apq.update_queue("api", rate_limit=None)
    await _until(lambda: len(done) == 3, timeout=5)
    apq.stop_working()
    await asyncio.wait_for(task, 15)


def test_fetch_on_an_autocommit_connection_keeps_the_limits(pq: PgQueue, dsn: str) -> None:
    pq.create_queue("api", concurrency=2)
    pq.insert([{"name": "api"} for _ in range(20)])
    conns = [psycopg.connect(dsn, autocommit=True) for _ in range(4)]
    try:
        claimed = run_concurrently(
            4, lambda i: sum(len(pq.fetch("api", 2, conn=conns[i])) for _ in range(5))
        )
    finally:
        for c in conns:
            c.close()
    assert sum(claimed) == 2


def test_a_rate_limit_ignores_starts_after_the_clock_was_set_back(pq: PgQueue) -> None:
    pq.create_queue("api", rate_limit=(1, 60))
    pq.insert([{"name": "api"} for _ in range(3)])
    pq.move_clock(7200)
    assert len(pq.fetch("api", 5)) == 1
    pq.move_clock(-3600)  # that start is now an hour ahead of the clock
    assert len(pq.fetch("api", 5)) == 1
    assert pq.fetch("api", 5) == []


def test_jobs_sent_without_a_group_join_one_when_their_queue_becomes_grouped(
    pq: PgQueue,
) -> None:
    pq.create_queue("tenants")
    pq.insert([{"name": "tenants", "data": i} for i in range(3)])
    pq.update_queue("tenants", group_concurrency=1)
    assert [j.data for j in pq.fetch("tenants", 10)] == [0]  # one group: ""
    assert pq.fetch("tenants", 10) == []


def test_a_group_rate_limit_counts_each_groups_starts_on_the_database_clock(
    pq: PgQueue,
) -> None:
    start = (pq.now() + timedelta(days=1)).replace(microsecond=0)
    pq.set_clock(start)
    pq.create_queue("api", group_rate_limit=(2, 3600))
    info = pq.get_queue("api")
    assert info is not None and info.group_rate_limit == (2, 3600.0)
    pq.insert([{"name": "api", "data": f"a{i}", "group": "a"} for i in range(5)])
    pq.insert([{"name": "api", "data": f"b{i}", "group": "b"} for i in range(3)])
    pq.send("api", "none")  # group ""
    assert sorted(j.data for j in pq.fetch("api", 3)) == ["a0", "b0", "none"]
    assert sorted(j.data for j in pq.fetch("api", 10)) == ["a1", "b1"]
    assert pq.fetch("api", 10) == []  # each group started two this hour (completing frees none)
    (stats,) = pq.get_queue_stats("api")
    assert stats.group_rate_limit == (2, 3600.0)
    assert stats.groups == {"a": (3, 2, 0), "b": (1, 2, 0), "": (0, 1, 1)}
    pq.send("api", "c0", group="c")  # a group of its own has its own quota
    assert [j.data for j in pq.fetch("api", 10)] == ["c0"]
    pq.set_clock(start + timedelta(seconds=3599))
    assert pq.fetch("api", 10) == []
    pq.set_clock(start + timedelta(seconds=3601))
    assert sorted(j.data for j in pq.fetch("api", 10)) == ["a2", "a3", "b2"]


def test_a_group_rate_limit_works_with_the_other_limits(pq: PgQueue) -> None:
    pq.create_queue("api", group_rate_limit=(3, 3600), group_concurrency=1, concurrency=2)
    pq.insert([{"name": "api", "group": g} for g in "abc" for _ in range(5)])
    first = pq.fetch("api", 10)
    assert sorted(j.group or "" for j in first) == ["a", "b"]  # the queue's two slots
    pq.complete([j.id for j in first])
    second = pq.fetch("api", 10)
    assert sorted(j.group or "" for j in second) == ["a", "c"]  # c had none running
    pq.complete([j.id for j in second])
    pq.complete([j.id for j in pq.fetch("api", 10)])
    pq.complete([j.id for j in pq.fetch("api", 10)])
    # Three starts each (one at a time, two at once): a and b are at their rate limit.
    fetched = pq.fetch("api", 10)
    assert [j.group for j in fetched] == ["c"]
    pq.update_queue("api", group_rate_limit=None)
    pq.complete([j.id for j in fetched])
    assert len(pq.fetch("api", 10)) == 2


def test_group_rate_limits_refuse_bad_values_and_one_per_key_policies(pq: PgQueue) -> None:
    for bad in [(0, 1), (5, 0), (5,), "5/s", (True, 1), (10_001, 1)]:
        with pytest.raises(pgqueue.InvalidOptionError, match="group_rate_limit"):
            pq.create_queue("api", group_rate_limit=bad)
    assert pq.get_queue("api") is None
    with pytest.raises(pgqueue.InvalidOptionError, match="group_rate_limit"):
        pq.create_queue("api", policy="singleton", group_rate_limit=(5, 1))
    assert pq.get_queue("api") is None


def test_maintenance_drops_group_rate_windows_that_hold_no_start(pq: PgQueue) -> None:
    pq.create_queue("api", group_rate_limit=(5, 60))
    pq.create_queue("other", group_rate_limit=(5, 60))
    pq.insert([{"name": n, "group": g} for n in ("api", "other") for g in "ab"])
    assert len(pq.fetch("api", 10)) == 2 and len(pq.fetch("other", 10)) == 2
    assert pq.maintain().rate_windows == 0  # all four still hold a start
    pq.move_clock(61)
    pq.send("api", group="a")
    assert len(pq.fetch("api", 10)) == 1  # a's window of api starts again
    pq.update_queue("other", group_rate_limit=None)
    assert pq.maintain().rate_windows == 3  # api's b, and other's two: no limit now
    pq.send("api", group="a")
    pq.send("api", group="b")
    assert len(pq.fetch("api", 10)) == 2
    (stats,) = pq.get_queue_stats("api")
    assert stats.groups["a"].rate_left == 3 and stats.groups["b"].rate_left == 4


async def test_a_worker_held_back_by_a_group_rate_limit_claims_when_it_allows(
    apq: AsyncPgQueue,
) -> None:
    starts: list[float] = []

    @apq.job("api")
    async def api(data: int) -> None:
        starts.append(time.monotonic())

    await apq.start()
    await apq.update_queue("api", group_rate_limit=(1, 1.0))
    await apq.insert([{"name": "api", "data": i, "group": "a"} for i in range(3)])
    task = asyncio.create_task(apq.work(poll_interval=30))
    await _until(lambda: len(starts) == 3, timeout=10)  # woken by the window, not the poll
    apq.stop_working()
    await asyncio.wait_for(task, 15)
    assert all(b - a > 0.9 for a, b in itertools.pairwise(starts)), starts


def test_claims_take_the_groups_in_turn(pq: PgQueue) -> None:
    # One job at a time (the queue's limit), each done before the next claim: every group
    # has none running at each claim, and the groups still take turns (the oldest jobs,
    # all of group a, do not go first).
    pq.create_queue("tenants", group_concurrency=100, concurrency=1)
    pq.insert([{"name": "tenants", "group": g} for g in "abc" for _ in range(10)])
    order: list[str | None] = []
    for _ in range(7):
        (job,) = pq.fetch("tenants", 5)
        order.append(job.group)
        pq.complete(job.id)
    assert order == ["a", "b", "c", "a", "b", "c", "a"]
    pq.send("tenants", group="0")  # a new group sorting first waits for its turn too
    pq.complete([j.id for j in pq.fetch("tenants", 1)])
    assert [j.group for j in pq.fetch("tenants", 1)] == ["c"]


@pytest.mark.parametrize(
    "limits",
    [
        {"group_rate_limit": (10_000, 1)},
        {"group_rate_limit": (5, 1), "concurrency": 2},
        {"rate_limit": (10_000, 1), "group_concurrency": 3},
    ],
)
async def test_a_worker_drains_a_limited_queue_and_then_rests(
    apq: AsyncPgQueue, limits: dict[str, Any]
) -> None:
    done: list[int] = []

    @apq.job("api")
    async def api(data: int) -> None:
        done.append(data)

    await apq.start()
    await apq.update_queue("api", **limits)
    await apq.insert([{"name": "api", "data": i, "group": f"g{i % 10}"} for i in range(80)])
    # Until the queue is empty (a group's quota of five a second holds its last three back
    # for a second), and then it stops: an empty limited queue is not claimed in a loop.
    await asyncio.wait_for(apq.work(until_empty=True), 20)
    assert sorted(done) == list(range(80))


async def test_a_group_held_by_its_rate_limit_holds_back_no_other_group(
    apq: AsyncPgQueue,
) -> None:
    started: dict[str, float] = {}

    @apq.job("api")
    async def api(data: str) -> None:
        started[data] = time.monotonic()

    await apq.start()
    await apq.update_queue("api", group_rate_limit=(1, 3600))
    await apq.insert([{"name": "api", "data": f"a{i}", "group": "a"} for i in range(2)])
    task = asyncio.create_task(apq.work(poll_interval=30))
    await _until(lambda: "a0" in started)
    await asyncio.sleep(0.3)  # the worker finds a1 held back by a's window for an hour
    sent = time.monotonic()
    await apq.send("api", "b0", group="b")
    await _until(lambda: "b0" in started, timeout=5)  # not the hour, nor the poll
    apq.stop_working()
    await asyncio.wait_for(task, 15)
    assert started["b0"] - sent < 5 and "a1" not in started


@pytest.mark.parametrize("limit", ["rate_limit", "group_rate_limit"])
def test_rate_windows_count_starts_again_when_the_clock_comes_back(pq: PgQueue, limit: str) -> None:
    options: dict[str, Any] = {limit: (3, 60)}
    pq.create_queue("api", **options)
    pq.insert([{"name": "api", "group": "a"} for _ in range(3)])
    assert len(pq.fetch("api", 10)) == 3
    pq.move_clock(-3600)  # those starts are an hour ahead of the clock: not yet happened
    pq.insert([{"name": "api", "group": "a"} for _ in range(6)])
    assert len(pq.fetch("api", 10)) == 3
    pq.move_clock(3600)  # back: the first three are in the window again
    assert pq.fetch("api", 10) == []
    pq.move_clock(61)
    assert len(pq.fetch("api", 10)) == 3


@pytest.mark.parametrize("isolation", ["REPEATABLE READ", "SERIALIZABLE"])
@pytest.mark.parametrize(
    "options", [{"concurrency": 1}, {"group_concurrency": 1}, {"policy": "singleton"}]
)
def test_a_turn_taking_fetch_refuses_an_older_snapshot(
    pq: PgQueue, dsn: str, isolation: str, options: dict[str, Any]
) -> None:
    pq.create_queue("api", **options)
    pq.insert([{"name": "api", "singleton_key": f"k{i}"} for i in range(3)])
    with psycopg.connect(dsn) as conn:
        conn.execute(f"SET TRANSACTION ISOLATION LEVEL {isolation}")
        with pytest.raises(pgqueue.InvalidInputError, match="READ COMMITTED"):
            pq.fetch("api", 1, conn=conn)
        conn.rollback()
    with psycopg.connect(dsn) as conn:  # READ COMMITTED: claimed within the limit
        assert len(pq.fetch("api", 1, conn=conn)) == 1
    (stats,) = pq.get_queue_stats("api")
    assert stats.active == 1
