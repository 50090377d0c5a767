"""pgqueue.testing.eager: send runs handlers at once, with no database at all (the queue
objects here point at a server that does not exist, and are never started)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

import pgqueue
from pgqueue import JobState
from pgqueue.errors import (
    InvalidOptionError,
    InvalidPayloadError,
    JobFailedError,
    QueueNotFoundError,
)
from pgqueue.testing import (
    EagerError,
    RunFailedError,
    aassert_sent,
    assert_sent,
    eager,
    sent_jobs,
)

NOWHERE = "postgresql://nobody@db.invalid:1/none"


class Order(BaseModel):
    id: int
    total: float


def make_queue() -> pgqueue.PgQueue:
    pq = pgqueue.PgQueue(NOWHERE)

    @pq.job("orders.place")
    def place(order: Order) -> dict[str, Any]:
        pq.send("orders.receipt", {"order": order.id})
        invoice.send({"order": order.id, "total": order.total})
        return {"placed": order.id}

    @pq.job("orders.receipt")
    def receipt(data: dict[str, int]) -> str:
        return f"receipt {data['order']}"

    @pq.job("orders.invoice")
    def invoice(data: dict[str, Any]) -> float:
        return float(data["total"])

    return pq


def test_send_runs_the_handler_then_the_jobs_it_sent() -> None:
    pq = make_queue()
    with eager(pq) as jobs:
        handle = pq.send("orders.place", Order(id=7, total=9.5))
        assert handle is not None and int(handle) == 1
        assert handle.result() == {"placed": 7}
        assert pq.result(handle) == {"placed": 7}
        assert [(r.name, r.output) for r in jobs.runs] == [
            ("orders.place", {"placed": 7}),
            ("orders.receipt", "receipt 7"),
            ("orders.invoice", 9.5),
        ]
        assert [j.state for j in jobs.jobs] == [JobState.completed] * 3
        assert assert_sent(pq, "orders.invoice", {"order": 7}, count=1)
        assert [j.data for j in sent_jobs(pq, "orders.receipt")] == [{"order": 7}]
        job = pq.get_job_by_id(2)
        assert job is not None and job.output == "receipt 7"
        assert pq.get_job_by_id(99) is None
    assert "send" not in vars(pq)  # the object is as it was


def test_payloads_are_validated_as_a_real_send_validates_them() -> None:
    pq = make_queue()
    with eager(pq) as jobs:
        with pytest.raises(InvalidPayloadError, match="does not match Order"):
            pq.send("orders.place", {"id": "seven"})
        with pytest.raises(InvalidPayloadError, match="not JSON"):
            pq.send("orders.receipt", {"at": object()})
        with pytest.raises(InvalidOptionError, match="priority"):
            pq.send("orders.receipt", {"order": 1}, priority="high")
        with pytest.raises(QueueNotFoundError, match="no handler"):
            pq.send("orders.typo", {})
        assert jobs.jobs == []  # nothing was sent


def test_a_failure_is_retried_at_once_then_recorded_without_raising() -> None:
    pq = pgqueue.PgQueue(NOWHERE)
    attempts: list[int] = []

    @pq.job("flaky", retry_limit=2)
    def flaky(job: pgqueue.RunningJob) -> str:
        attempts.append(job.attempt)
        if job.attempt < 3:
            raise RuntimeError(f"try {job.attempt}")
        return "ok"

    @pq.job("broken", retry_limit=0)
    def broken(data: Any) -> None:
        raise SystemExit(2)

    with eager(pq) as jobs:
        assert pq.send("flaky") is not None
        assert attempts == [1, 2, 3] and jobs.job(1).state is JobState.completed
        handle = pq.send("broken")
        assert handle is not None
        assert jobs.job(int(handle)).state is JobState.failed
        with pytest.raises(JobFailedError, match="broken") as failed:
            handle.result()
        assert failed.value.error["type"] == "SystemExit"
        assert [r.outcome for r in jobs.runs] == ["failed", "failed", "completed", "failed"]


def test_raise_errors_raises_what_the_handler_raised_as_the_cause() -> None:
    pq = pgqueue.PgQueue(NOWHERE)

    @pq.job("bad", retry_limit=0)
    def bad(data: Any) -> None:
        raise ValueError("bad data")

    with eager(pq, raise_errors=True), pytest.raises(RunFailedError, match="bad data") as e:
        pq.send("bad", 1)
    assert isinstance(e.value.__cause__, ValueError)


def test_a_job_that_sends_itself_forever_stops_at_max_runs() -> None:
    pq = pgqueue.PgQueue(NOWHERE)

    @pq.job("loop")
    def loop(data: int) -> None:
        pq.send("loop", data + 1)

    with eager(pq, max_runs=50) as jobs, pytest.raises(EagerError, match="max_runs"):
        pq.send("loop", 0)
    assert len(jobs.runs) == 50


def test_what_needs_the_database_fails_loudly() -> None:
    pq = make_queue()
    with eager(pq):
        with pytest.raises(EagerError, match="conn="):
            pq.send("orders.receipt", {}, conn=object())  # type: ignore[arg-type]
        with pytest.raises(EagerError, match=r"find_jobs\(\) needs the database"):
            pq.find_jobs("orders.receipt")
        for call in (
            lambda: pq.fetch("orders.receipt"),
            lambda: pq.move_clock(1),
            lambda: pq.work(),
            lambda: pq.publish("event"),
        ):
            with pytest.raises(EagerError):
                call()
        with pytest.raises(EagerError, match="singleton keys"):
            pq.send("orders.receipt", {}, singleton_key="k")
        with pytest.raises(EagerError, match=r"send_throttled\(\) needs the database"):
            pq.send_throttled("orders.receipt", {}, 60)
        with pytest.raises(EagerError, match="dependencies"):
            pq.send("orders.receipt", {}, depends_on=[1])
        with pq:  # start and stop do nothing
            pass
        with pytest.raises(EagerError, match="already"), eager(pq):
            pass


def test_result_of_a_job_not_run_yet_says_so() -> None:
    pq = pgqueue.PgQueue(NOWHERE)

    @pq.job("parent")
    def parent(data: Any) -> Any:
        child = pq.send("child")
        assert child is not None
        return child.result()  # the child runs after this handler returns

    @pq.job("child")
    def child(data: Any) -> int:
        return 1

    with eager(pq) as jobs:
        pq.send("parent")
        assert jobs.runs[0].outcome == "failed" and "has not run yet" in str(jobs.runs[0].error)


def test_jobs_run_in_priority_order_and_insert_sends_many() -> None:
    pq = pgqueue.PgQueue(NOWHERE)
    order: list[str] = []

    @pq.job("fan")
    def fan(data: Any) -> None:
        pq.insert(
            [{"name": "leaf", "data": "low"}, {"name": "leaf", "data": "high", "priority": 9}]
        )

    @pq.job("leaf")
    def leaf(data: str) -> None:
        order.append(data)

    with eager(pq):
        pq.send("fan")
        assert pq.insert([{"name": "leaf", "data": "x"}]) == [4]
    assert order == ["high", "low", "x"]


async def test_the_async_flavour_awaits_async_handlers() -> None:
    apq = pgqueue.AsyncPgQueue(NOWHERE)

    @apq.job("a")
    async def a(order: Order) -> int:
        await b.send(order.id)
        return order.id

    @apq.job("b")
    def b(data: int) -> int:
        return data * 2

    with eager(apq) as jobs:
        handle = await a.send(Order(id=3, total=1))
        assert handle is not None and await handle.result() == 3
        assert jobs.outputs() == [3, 6]
        await aassert_sent(apq, "b", 3)
        with pytest.raises(InvalidPayloadError):
            await apq.send("a", {"total": 1})
        with pytest.raises(EagerError):
            await apq.find_jobs()


def test_a_blocking_queues_async_handler_runs_on_a_loop_of_its_own() -> None:
    pq = pgqueue.PgQueue(NOWHERE)

    @pq.job("async_one")
    async def async_one(data: int) -> int:
        return data + 1

    with eager(pq) as jobs:
        pq.send("async_one", 1)
    assert jobs.outputs() == [2]


def test_a_started_object_or_anything_else_is_refused() -> None:
    with pytest.raises(pgqueue.InvalidInputError), eager(object()):  # type: ignore[type-var]
        pass
    with pytest.raises(pgqueue.InvalidInputError), eager(make_queue(), max_runs=0):
        pass


def test_a_snoozed_job_runs_again_at_once() -> None:
    pq = pgqueue.PgQueue(NOWHERE)

    @pq.job("patient")
    def patient(data: Any, job: pgqueue.RunningJob) -> int:
        if job.attempt < 3:
            job.snooze(3600)
        return job.attempt

    with eager(pq) as jobs:
        pq.send("patient")
    assert [r.outcome for r in jobs.runs] == ["snoozed", "snoozed", "completed"]
    assert jobs.job(1).retry_count == 0 and jobs.outputs() == [3]


async def test_concurrent_sends_each_return_once_their_job_ran() -> None:
    apq = pgqueue.AsyncPgQueue(NOWHERE)

    @apq.job("slow")
    async def slow(data: int) -> int:
        await asyncio.sleep(0)  # lets the other sends in
        if data == 0:
            await apq.send("slow", 100)
        return data

    with eager(apq) as jobs:
        handles = await asyncio.gather(*(apq.send("slow", i) for i in range(3)))
        assert [await h.result() for h in handles if h is not None] == [0, 1, 2]
        assert sorted(jobs.outputs()) == [0, 1, 2, 100]


async def test_a_failing_send_does_not_drop_the_job_of_a_concurrent_one() -> None:
    apq = pgqueue.AsyncPgQueue(NOWHERE)

    @apq.job("step", retry_limit=0)
    async def step(data: int) -> int:
        await asyncio.sleep(0)  # lets the other send in
        if data < 0:
            raise ValueError("no")
        return data

    with eager(apq, raise_errors=True) as jobs:
        failing, fine = await asyncio.gather(
            apq.send("step", -1), apq.send("step", 7), return_exceptions=True
        )
        assert isinstance(failing, RunFailedError)
        assert fine is not None and not isinstance(fine, BaseException)
        assert await fine.result() == 7
    assert [(r.data, r.outcome) for r in jobs.runs] == [(-1, "failed"), (7, "completed")]


def test_a_send_that_failed_leaves_nothing_for_the_next_send_to_run() -> None:
    pq = pgqueue.PgQueue(NOWHERE)

    @pq.job("loop")
    def loop(data: int) -> None:
        pq.send("loop", data + 1)

    @pq.job("bad", retry_limit=3)
    def bad(data: Any) -> None:
        raise ValueError("bad data")

    @pq.job("fine")
    def fine(data: int) -> int:
        return data

    with eager(pq, max_runs=5, raise_errors=True) as jobs:
        with pytest.raises(EagerError, match="max_runs"):
            pq.send("loop", 0)
        assert pq.send("fine", 1) is not None
        assert jobs.runs[-1].output == 1  # the runaway's next job is not run here
        with pytest.raises(RunFailedError, match="attempt 1 failed"):
            pq.send("bad", None)
        assert pq.send("fine", 2) is not None
        assert jobs.runs[-1].output == 2  # nor the failed job's retry
    assert [r.name for r in jobs.runs] == ["loop"] * 5 + ["fine", "bad", "fine"]
    left = [j for j in jobs.jobs if j.name in ("loop", "bad") and not j.state.finished]
    assert [(j.name, j.state) for j in left] == [
        ("loop", JobState.created),
        ("bad", JobState.retry),
    ]


def test_a_keyboard_interrupt_in_a_handler_is_not_swallowed() -> None:
    pq = pgqueue.PgQueue(NOWHERE)

    @pq.job("interrupted")
    def interrupted(data: bool) -> bool:
        if data:
            raise KeyboardInterrupt
        return data

    with eager(pq) as jobs:
        with pytest.raises(KeyboardInterrupt):
            pq.send("interrupted", True)
        pq.send("interrupted", False)  # eager mode works on
    assert jobs.outputs() == [False]


def test_a_queue_without_a_handler_here_records_its_jobs_without_running_them() -> None:
    pq = make_queue()
    with eager(pq) as jobs:
        assert pq.create_queue("billing.export", retry_limit=5) is True
        assert pq.create_queue("billing.export") is False
        assert pq.create_queue("orders.receipt") is False  # its handler's queue
        with pytest.raises(InvalidOptionError, match="retry_limit"):
            pq.create_queue("billing.other", retry_limit=-1)
        handle = pq.send("billing.export", {"month": 5})
        assert handle is not None
        (job,) = assert_sent(pq, "billing.export", {"month": 5})
        assert job.state is JobState.created and jobs.runs == []
        with pytest.raises(EagerError, match="has no handler here"):
            handle.result()
        with pytest.raises(QueueNotFoundError, match="create_queue made"):
            pq.send("billing.other")
