"""The worker on a real database: handlers, outcomes, limits, time, cancellation, shutdown."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from pydantic import BaseModel

import pgqueue
from pgqueue import AsyncPgQueue, Job, JobState, PgQueue, RunningJob


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 15.0, interval: float = 0.02
) -> None:
    """Poll ``predicate`` until it holds; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


async def state_of(pq: AsyncPgQueue, job_id: int | None) -> JobState:
    assert job_id is not None
    job = await pq.get_job_by_id(job_id)
    assert job is not None
    return job.state


@asynccontextmanager
async def working(pq: AsyncPgQueue, **options: Any) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``pq.work()`` in a task for the block, then stop it and surface its errors."""
    options.setdefault("poll_interval", 0.2)
    task = asyncio.create_task(pq.work(**options))
    try:
        yield task
    finally:
        pq.stop_working()
        await asyncio.wait_for(task, 30)


async def test_async_and_sync_handlers_store_outputs(dsn: str, schema: str) -> None:
    pq = AsyncPgQueue(dsn, schema=schema)

    @pq.job("add")
    async def add(data: dict[str, int]) -> int:
        return data["a"] + data["b"]

    @pq.job("upper")
    def upper(data: str) -> str:
        return data.upper()

    async with pq:
        a = await add.send({"a": 2, "b": 3})
        u = await upper.send("hi")
        await pq.work(until_empty=True)
        done_a, done_u = await pq.get_job_by_id(a or 0), await pq.get_job_by_id(u or 0)
    assert done_a is not None and done_a.state is JobState.completed and done_a.output == 5
    assert done_u is not None and done_u.state is JobState.completed and done_u.output == "HI"
    assert await add({"a": 1, "b": 1}) == 2  # the decorated function is still the function


async def test_error_retries_then_fails_and_worker_goes_on(dsn: str, schema: str) -> None:
    pq = AsyncPgQueue(dsn, schema=schema)
    calls: list[int] = []

    @pq.job("flaky", retry_limit=2, retry_delay=0)
    async def flaky(data: Any, job: Job) -> None:
        calls.append(job.retry_count)
        raise RuntimeError(f"attempt {job.retry_count}")

    @pq.job("fine")
    async def fine(data: Any) -> str:
        return "ok"

    async with pq:
        bad = await flaky.send()
        good = await fine.send()
        await pq.work(until_empty=True)
        failed = await pq.get_job_by_id(bad or 0)
        assert await state_of(pq, good) is JobState.completed
    assert calls == [0, 1, 2]
    assert failed is not None and failed.state is JobState.failed and failed.retry_count == 2
    assert failed.output["type"] == "RuntimeError"
    assert failed.output["message"] == "attempt 2"
    assert "Traceback" in failed.output["traceback"]


async def test_failed_job_is_copied_to_its_dead_letter_queue(dsn: str, schema: str) -> None:
    pq = AsyncPgQueue(dsn, schema=schema)

    @pq.job("graveyard")
    async def graveyard(data: Any) -> None:
        raise AssertionError("dead letters are not worked in this test")

    @pq.job("doomed", retry_limit=0, dead_letter="graveyard")
    async def doomed(data: Any) -> None:
        raise ValueError("no")

    async with pq:
        job_id = await doomed.send({"x": 1})
        await pq.work(until_empty=True, queues=["doomed"])
        (dead,) = await pq.fetch("graveyard")
    assert dead.data == {"x": 1}
    assert dead.output["source_queue"] == "doomed" and dead.output["source_id"] == job_id


class Signup(BaseModel):
    email: str
    first_name: str


async def test_pydantic_payloads(dsn: str, schema: str) -> None:
    pq = AsyncPgQueue(dsn, schema=schema)
    seen: list[Signup] = []

    @pq.job("signup", retry_limit=3)
    async def signup(data: Signup) -> str:
        seen.append(data)
        return data.first_name

    async with pq:
        with pytest.raises(pgqueue.InvalidPayloadError, match="Signup"):
            await signup.send({"email": "a@b.c"})  # type: ignore[arg-type]  # untyped caller
        ok = await signup.send(Signup(email="a@b.c", first_name="Ada"))
        # Sending by name validates too; a producer without the handler (another service)
        # cannot, and then the worker refuses the data without retrying.
        with pytest.raises(pgqueue.InvalidPayloadError, match="Signup"):
            await pq.send("signup", {"email": 3})
        async with AsyncPgQueue(dsn, schema=schema) as producer:
            bad = await producer.send("signup", {"email": 3})
        await pq.work(until_empty=True)
        refused = await pq.get_job_by_id(bad or 0)
        assert await state_of(pq, ok) is JobState.completed
    assert seen == [Signup(email="a@b.c", first_name="Ada")]
    assert refused is not None and refused.state is JobState.failed
    assert refused.retry_count == 0 and "Signup" in refused.output["message"]


async def test_send_validation_writes_nothing(
    dsn: str, schema: str, conn: psycopg.Connection[Any]
) -> None:
    pq = AsyncPgQueue(dsn, schema=schema)

    @pq.job("signup")
    async def signup(data: Signup) -> None:
        pass

    async with pq:
        with pytest.raises(pgqueue.InvalidPayloadError):
            await signup.send({"first_name": "x"})  # type: ignore[arg-type]  # untyped caller
        row = conn.execute(f'SELECT count(*) FROM "{schema}".job').fetchone()
    assert row == (0,)


async def test_progress_is_visible_while_running(apq: AsyncPgQueue) -> None:
    release = asyncio.Event()

    @apq.job("long")
    async def long(data: Any, job: RunningJob) -> str:
        job.progress({"done": 1, "of": 2})
        await release.wait()
        job.progress({"done": 2, "of": 2})
        return "finished"

    await apq.start()
    job_id = await long.send()
    async with working(apq):

        async def progressed() -> bool:
            job = await apq.get_job_by_id(job_id or 0)
            return job is not None and job.last_progress == {"done": 1, "of": 2}

        await wait_until(progressed)
        release.set()
        await wait_until(lambda: _is(apq, job_id, JobState.completed))
    final = await apq.get_job_by_id(job_id or 0)
    assert final is not None and final.last_progress == {"done": 2, "of": 2}


async def _is(pq: AsyncPgQueue, job_id: int | None, state: JobState) -> bool:
    return await state_of(pq, job_id) is state


async def test_per_queue_and_total_concurrency(apq: AsyncPgQueue) -> None:
    running = {"narrow": 0, "wide": 0}
    peak = {"narrow": 0, "wide": 0, "total": 0}

    def track(name: str) -> Callable[[Any], Awaitable[None]]:
        async def handler(data: Any) -> None:
            running[name] += 1
            peak[name] = max(peak[name], running[name])
            peak["total"] = max(peak["total"], sum(running.values()))
            await asyncio.sleep(0.02)
            running[name] -= 1

        return handler

    apq.job("narrow", concurrency=2)(track("narrow"))
    apq.job("wide")(track("wide"))
    await apq.start()
    await apq.insert([{"name": n} for n in ("narrow", "wide") for _ in range(30)])
    await apq.work(until_empty=True, concurrency=5)
    assert peak["narrow"] == 2
    assert peak["total"] == 5


async def test_sync_handlers_share_the_threads_and_async_ones_the_concurrency(
    apq: AsyncPgQueue,
) -> None:
    lock = threading.Lock()
    running = {"sync": 0, "async": 0}
    peak = {"sync": 0, "total": 0}

    def note(kind: str, step: int) -> None:
        with lock:
            running[kind] += step
            peak["sync"] = max(peak["sync"], running["sync"])
            peak["total"] = max(peak["total"], sum(running.values()))

    def blocking(data: Any) -> None:
        note("sync", 1)
        time.sleep(0.05)
        note("sync", -1)

    async def cooperative(data: Any) -> None:
        note("async", 1)
        await asyncio.sleep(0.2)
        note("async", -1)

    apq.job("sync_a")(blocking)
    apq.job("sync_b")(blocking)
    apq.job("async_c")(cooperative)
    await apq.start()
    await apq.insert([{"name": n} for n in ("sync_a", "sync_b", "async_c") for _ in range(40)])
    await apq.work(until_empty=True, concurrency=12, threads=3)
    assert peak["sync"] == 3  # two sync queues, three threads between them
    assert peak["total"] == 12


async def test_expire_in_cancels_async_and_abandons_sync(apq: AsyncPgQueue) -> None:
    started = threading.Event()

    @apq.job("slow_async", expire_in=0.3, retry_limit=0)
    async def slow_async(data: Any) -> None:
        await asyncio.sleep(30)

    @apq.job("slow_sync", expire_in=0.3, retry_limit=1, retry_delay=0)
    def slow_sync(data: Any, job: RunningJob) -> str:
        started.set()
        while not job.cancelled:  # the worker flags the job when it expires
            time.sleep(0.01)
        return "discarded"

    await apq.start()
    a = await slow_async.send()
    s = await slow_sync.send()
    await apq.work(until_empty=True)
    expired = await apq.get_job_by_id(a or 0)
    retried = await apq.get_job_by_id(s or 0)
    assert expired is not None and expired.state is JobState.expired
    assert "expire_in" in expired.output["message"]
    # One retry allowed: it expired twice, and its result was never recorded.
    assert retried is not None and retried.state is JobState.expired
    assert retried.retry_count == 1 and retried.output != "discarded"


async def test_jobs_claimed_together_expire_each_by_its_own_limit(apq: AsyncPgQueue) -> None:
    # One claim takes all four jobs; expiry is armed per claim and expire_in, yet only the
    # jobs that outlive their own limit expire.
    finished: list[float] = []

    @apq.job("mixed", retry_limit=0)
    async def mixed(data: dict[str, float]) -> str:
        await asyncio.sleep(data["sleep"])
        finished.append(data["sleep"])
        return "done"

    await apq.start()
    ids = await apq.insert(
        [
            {"name": "mixed", "data": {"sleep": 0}, "expire_in": 0.4},
            {"name": "mixed", "data": {"sleep": 5}, "expire_in": 0.4},
            {"name": "mixed", "data": {"sleep": 0.8}, "expire_in": 5},
            {"name": "mixed", "data": {"sleep": 5}, "expire_in": 1.2},
        ]
    )
    await asyncio.wait_for(apq.work(until_empty=True, concurrency=10), 30)
    assert sorted(finished) == [0, 0.8]  # the expired ones were cut short
    states = [await state_of(apq, i) for i in ids]
    assert states == [JobState.completed, JobState.expired, JobState.completed, JobState.expired]


async def test_cancel_reaches_running_handlers(apq: AsyncPgQueue) -> None:
    entered = asyncio.Event()
    sync_entered = threading.Event()
    outcome: dict[str, str] = {}

    @apq.job("waits")
    async def waits(data: Any) -> None:
        entered.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            outcome["async"] = "cancelled"
            raise

    @apq.job("polls")
    def polls(data: Any, job: RunningJob) -> None:
        sync_entered.set()
        deadline = time.monotonic() + 30
        while not job.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        outcome["sync"] = "saw cancel" if job.cancelled else "timed out"

    await apq.start()
    a = await waits.send()
    s = await polls.send()
    async with working(apq, poll_interval=30):
        await asyncio.wait_for(entered.wait(), 15)
        await asyncio.to_thread(sync_entered.wait, 15)
        assert set(await apq.cancel([a or 0, s or 0])) == {a, s}

        async def both_seen() -> bool:
            return len(outcome) == 2

        await wait_until(both_seen)
    assert outcome == {"async": "cancelled", "sync": "saw cancel"}
    assert await state_of(apq, a) is JobState.cancelled
    assert await state_of(apq, s) is JobState.cancelled


async def test_a_poll_only_worker_sees_a_cancellation_within_its_poll_interval(
    dsn: str, schema: str
) -> None:
    pq = AsyncPgQueue(dsn, schema=schema, maintenance=False, listen=False)
    entered = asyncio.Event()
    outcome: list[str] = []

    @pq.job("waits")
    async def waits(data: Any) -> None:
        entered.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    async with pq:
        job_id = await waits.send()
        # Beats every 20 s: only the looks at each poll can find the cancellation in time.
        async with working(pq, poll_interval=0.2, heartbeat_seconds=60):
            await asyncio.wait_for(entered.wait(), 15)
            assert await pq.cancel(job_id or 0) == [job_id]

            async def seen() -> bool:
                return bool(outcome)

            await wait_until(seen, timeout=5)
        assert await state_of(pq, job_id) is JobState.cancelled


async def test_notification_wakes_an_idle_worker_and_polling_backs_it_up(
    apq: AsyncPgQueue,
) -> None:
    ran: list[int] = []

    @apq.job("ping")
    async def ping(data: int) -> None:
        ran.append(data)

    listening = asyncio.Event()
    apq.on("listening", lambda worker_id: listening.set())
    await apq.start()
    async with working(apq, poll_interval=60):
        await asyncio.wait_for(listening.wait(), 15)
        await ping.send(1)

        async def ran_one() -> bool:
            return ran == [1]

        # With a 60 s poll interval, only the notification can wake it before this deadline.
        await wait_until(ran_one, timeout=5)
    async with working(apq, poll_interval=0.2):
        await ping.send_after(2, 0.5)

        async def ran_two() -> bool:
            return ran == [1, 2]

        await wait_until(ran_two, timeout=10)


async def test_heartbeat_touches_active_jobs(
    apq: AsyncPgQueue, conn: psycopg.Connection[Any]
) -> None:
    release = asyncio.Event()

    @apq.job("beats", heartbeat_seconds=0.3)
    async def beats(data: Any) -> None:
        await release.wait()

    await apq.start()
    job_id = await beats.send()
    query = (
        f'SELECT COALESCE(heartbeat_at, started_at) FROM "{apq.schema}".job '
        "WHERE id = %s AND state = %s"
    )
    async with working(apq):
        await wait_until(lambda: _is(apq, job_id, JobState.active))
        first = conn.execute(query, (job_id, "active")).fetchone()

        async def beat_again() -> bool:
            now = conn.execute(query, (job_id, "active")).fetchone()
            return now is not None and first is not None and now[0] > first[0]

        await wait_until(beat_again, timeout=5)
        release.set()
    assert await state_of(apq, job_id) is JobState.completed


async def test_graceful_stop_releases_unfinished_jobs(apq: AsyncPgQueue) -> None:
    entered = asyncio.Event()

    @apq.job("stuck")
    async def stuck(data: Any) -> None:
        entered.set()
        await asyncio.sleep(60)

    @apq.job("quick")
    async def quick(data: Any) -> str:
        return "done"

    await apq.start()
    stuck_id = await stuck.send()
    quick_id = await quick.send()
    task = asyncio.create_task(apq.work(shutdown_timeout=0.2, poll_interval=0.2))
    await asyncio.wait_for(entered.wait(), 15)
    await wait_until(lambda: _is(apq, quick_id, JobState.completed))
    apq.stop_working()
    await asyncio.wait_for(task, 15)
    released = await apq.get_job_by_id(stuck_id or 0)
    assert released is not None and released.state is JobState.retry
    assert released.retry_count == 0  # a release is not a failure


async def test_connection_loss_pauses_work_without_losing_jobs(
    apq: AsyncPgQueue, conn: psycopg.Connection[Any]
) -> None:
    done: set[int] = set()

    @apq.job("count")
    async def count(data: int) -> None:
        await asyncio.sleep(0.001)
        done.add(data)

    await apq.start()
    await count.insert(range(2000))
    async with working(apq):

        async def some_done() -> bool:
            return len(done) >= 200

        await wait_until(some_done)
        # Every connection of this queue object (each has run a statement naming its
        # schema), and no other session's.
        killed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend' AND position(%s in query) > 0",
            (apq.schema,),
        ).fetchone()
        assert killed is not None and killed[0] >= 2  # the pool's and the listener's at least

        async def all_completed() -> bool:
            row = conn.execute(
                f"SELECT count(*) FROM \"{apq.schema}\".job WHERE state = 'completed'"
            ).fetchone()
            return row == (2000,)

        await wait_until(all_completed, timeout=60, interval=0.2)
    assert done == set(range(2000))


def test_sync_work_blocks_until_stopped_from_another_thread(dsn: str, schema: str) -> None:
    pq = PgQueue(dsn, schema=schema)
    results: list[int] = []

    @pq.job("square")
    def square(data: int) -> int:
        results.append(data)
        return data * data

    with pq:
        ids = square.insert(range(10))
        thread = threading.Thread(target=pq.work, kwargs={"poll_interval": 0.2})
        thread.start()
        deadline = time.monotonic() + 15
        while len(results) < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        pq.stop()
        thread.join(15)
        assert not thread.is_alive()
    assert sorted(results) == list(range(10))
    with PgQueue(dsn, schema=schema) as again:
        outputs = [again.get_job_by_id(i) for i in ids if i is not None]
    assert [j.output for j in outputs if j] == [i * i for i in range(10)]


def test_catalogue_lists_registered_jobs(dsn: str, schema: str) -> None:
    pq = PgQueue(dsn, schema=schema)

    @pq.job("report", description="Build the monthly report", retry_limit=5, priority=3)
    def report(data: Any) -> None:
        """Ignored: the description argument wins."""

    @pq.job("cleanup")
    def cleanup() -> None:
        """Remove temporary files."""

    catalogue = {d.name: d for d in pq.registry.definitions()}
    assert catalogue["report"].description == "Build the monthly report"
    assert catalogue["report"].options == {"retry_limit": 5, "priority": 3}
    assert catalogue["cleanup"].description == "Remove temporary files."
    with pq:
        queue = pq.get_queue("report")
        assert queue is not None and queue.retry_limit == 5
        job_id = report.send({})
        job = pq.get_job_by_id(job_id or 0)
        assert job is not None and job.priority == 3 and job.retry_limit == 5


def test_bad_handler_declarations_are_refused(pq: PgQueue) -> None:
    with pytest.raises(pgqueue.InvalidNameError):
        pq.job("bad name")(lambda: None)
    with pytest.raises(pgqueue.InvalidOptionError, match="retry_limit"):
        pq.job("q", retry_limit=-1)(lambda: None)
    with pytest.raises(pgqueue.InvalidOptionError, match="bogus"):
        pq.job("q", bogus=1)(lambda: None)
    with pytest.raises(pgqueue.InvalidOptionError, match="concurrency"):
        pq.job("q", concurrency=0)(lambda: None)
    with pytest.raises(pgqueue.WorkerError, match="no job handlers"):
        pq.work()


def test_the_sync_worker_keeps_the_pool_settings(dsn: str, schema: str) -> None:
    # PgQueue.work() runs an async worker on a pool of its own: sized like the user's.
    app = f"pgq-{uuid.uuid4().hex[:8]}"
    pq = PgQueue(
        make_conninfo(dsn, application_name=app),
        schema=schema,
        pool_min_size=6,
        pool_max_size=6,
        maintenance=False,
    )
    seen: list[int] = []

    @pq.job("count")
    def count(data: Any) -> None:
        with psycopg.connect(dsn) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [app]
            ).fetchone()
            seen.append(row[0] if row else 0)

    with pq:
        pq.send("count")
        pq.work(until_empty=True)
    assert seen == [6 + 6 + 1]  # its own pool, the worker's, the listener


async def _warm_up(pq: AsyncPgQueue, started: list[int], data: dict[str, Any]) -> None:
    """Run 40 instant jobs of queue "fast" (whose handler appends to ``started``), so the
    worker knows its runs are short and claims ahead."""
    await pq.insert([{"name": "fast", "data": data} for _ in range(40)])

    async def warmed() -> bool:
        return len(started) == 40

    await wait_until(warmed)


async def _held(pq: AsyncPgQueue, ids: list[int]) -> list[int]:
    """The jobs among ``ids`` that are active (held by a worker)."""
    return [i for i in ids if await state_of(pq, i) is JobState.active]


async def test_short_runs_are_claimed_ahead_and_a_stop_hands_back_those_waiting(
    apq: AsyncPgQueue,
) -> None:
    gate = asyncio.Event()
    started: list[int] = []

    @apq.job("fast")
    async def fast(data: Any, job: RunningJob) -> None:
        started.append(job.id)
        if data["hold"]:
            await gate.wait()

    await apq.start()
    task = asyncio.create_task(apq.work(concurrency=2, shutdown_timeout=0.2, poll_interval=0.2))
    await _warm_up(apq, started, {"hold": False})
    # Its runs are short now: two run, and two more are claimed to wait for a slot.
    held = [i for i in await apq.insert([{"name": "fast", "data": {"hold": True}}] * 6) if i]

    async def four_held() -> bool:
        return len(await _held(apq, held)) == 4 and len(started) == 42

    await wait_until(four_held)
    running = set(started[40:])
    waiting = [i for i in await _held(apq, held) if i not in running]
    assert len(waiting) == 2
    assert await apq.cancel([waiting[0]]) == [waiting[0]]
    apq.stop_working()
    await asyncio.wait_for(task, 15)
    for job_id in [*running, waiting[1]]:  # handed back without a failure
        job = await apq.get_job_by_id(job_id)
        assert job is not None and job.state is JobState.retry and job.retry_count == 0
    assert await state_of(apq, waiting[0]) is JobState.cancelled

    gate.set()
    await apq.work(concurrency=2, until_empty=True)
    assert waiting[0] not in started  # cancelled while it waited: never ran
    assert sorted(started[40:]) == sorted([*running, *(i for i in held if i != waiting[0])])
    for job_id in held:
        if job_id != waiting[0]:
            assert await state_of(apq, job_id) is JobState.completed


async def test_long_runs_are_not_claimed_ahead(apq: AsyncPgQueue) -> None:
    gate = asyncio.Event()
    started: list[int] = []

    @apq.job("slow", concurrency=2)
    async def slow(data: Any, job: RunningJob) -> None:
        started.append(job.id)
        await gate.wait()

    @apq.job("probe")
    async def probe(data: Any) -> None:
        return None

    await apq.start()
    ids = [i for i in await apq.insert([{"name": "slow"}] * 5) if i]
    async with working(apq, concurrency=3):

        async def two_running() -> bool:
            return len(started) == 2

        await wait_until(two_running)
        probed = await probe.send()  # a claim round runs after the slow queue's claim
        await wait_until(lambda: _is(apq, probed, JobState.completed))
        assert sorted(await _held(apq, ids)) == sorted(started)
        gate.set()


async def test_a_job_claimed_ahead_whose_time_runs_out_while_it_waits_goes_back(
    apq: AsyncPgQueue,
) -> None:
    started: list[int] = []

    @apq.job("fast", retry_limit=0)
    async def fast(data: Any, job: RunningJob) -> None:
        started.append(job.id)
        await asyncio.sleep(data["seconds"])

    await apq.start()
    async with working(apq, concurrency=1):
        await _warm_up(apq, started, {"seconds": 0})
        blocker, late = await apq.insert(
            [
                {"name": "fast", "data": {"seconds": 0.8}},
                {"name": "fast", "data": {"seconds": 0}, "expire_in": 0.5},
            ]
        )
        await wait_until(lambda: _is(apq, late, JobState.completed))
        await wait_until(lambda: _is(apq, blocker, JobState.completed))
    job = await apq.get_job_by_id(late or 0)
    assert job is not None and job.retry_count == 0  # it lost no attempt it never used
    assert started.count(late or 0) == 1 and started.index(late or 0) > started.index(blocker or 0)


async def test_jobs_claimed_ahead_go_back_when_the_queue_slows_down(apq: AsyncPgQueue) -> None:
    gate = asyncio.Event()
    started: list[int] = []

    @apq.job("fast")
    async def fast(data: Any, job: RunningJob) -> None:
        started.append(job.id)
        if data["hold"]:
            await gate.wait()

    await apq.start()
    async with working(apq, concurrency=2):
        await _warm_up(apq, started, {"hold": False})
        held = [i for i in await apq.insert([{"name": "fast", "data": {"hold": True}}] * 4) if i]

        async def two_run_and_two_went_back() -> bool:
            states = [await state_of(apq, i) for i in held]
            return len(started) == 42 and states.count(JobState.retry) == 2

        await wait_until(two_run_and_two_went_back, timeout=10)  # a second after the claim
        for job_id in held:
            job = await apq.get_job_by_id(job_id)
            assert job is not None and job.retry_count == 0  # not a failure
        gate.set()

        async def all_done() -> bool:
            return all([await state_of(apq, i) is JobState.completed for i in held])

        await wait_until(all_done)


async def test_each_run_logs_its_start_and_its_end_with_the_job_fields(
    dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    pq = AsyncPgQueue(dsn, schema=schema, maintenance=False)

    @pq.job("logged", retry_limit=0)
    async def logged(data: str) -> str:
        if data == "bad":
            raise ValueError("no good")
        return data

    caplog.set_level("DEBUG", logger="pgqueue.worker")
    async with pq:
        good = await pq.send("logged", "fine")
        bad = await pq.send("logged", "bad")
        await pq.work(until_empty=True)
    runs = [r for r in caplog.records if getattr(r, "job_id", None) in (good, bad)]
    started = [r for r in runs if r.levelname == "DEBUG"]
    assert [r.getMessage() for r in started] == [
        f"job {good} (logged) attempt 1 started",
        f"job {bad} (logged) attempt 1 started",
    ]
    [done] = [r for r in runs if r.levelname == "INFO"]
    assert done.getMessage().startswith(f"job {good} (logged) attempt 1 completed in ")
    assert (done.queue, done.job_id, done.attempt) == ("logged", good, 1)  # type: ignore[attr-defined]
    assert 0 <= done.duration < 5  # type: ignore[attr-defined]
    [failed] = [r for r in runs if r.levelname == "WARNING"]
    message = failed.getMessage()
    assert message.startswith(f"job {bad} (logged) attempt 1 failed after ")
    assert ": ValueError: no good\nTraceback (most recent call last):" in message
    assert 'raise ValueError("no good")' in message
