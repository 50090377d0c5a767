"""Finding jobs by what they are, page by page, and changing jobs that have not started."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

import pytest
from pydantic import BaseModel

import pgqueue
from pgqueue import JobState, PgQueue
from pgqueue.testing import aadvance, adrain


def test_find_jobs_by_queue_state_key_group_and_data_page_by_page(pq: PgQueue) -> None:
    pq.create_queue("mail", retry_limit=0)
    pq.create_queue("other")
    ids = pq.insert(
        [{"name": "mail", "data": {"to": f"u{i}", "n": i}, "group": f"g{i % 2}"} for i in range(10)]
    )
    pq.send("mail", {"to": "keyed"}, singleton_key="k1")
    pq.send("other", {"to": "u1"})
    failed = pq.fetch("mail", 2)
    pq.fail(failed, "smtp down")
    assert [j.id for j in pq.find_jobs("mail", state="failed")] == [j.id for j in failed]
    waiting = pq.find_jobs("mail", state=[JobState.created, "retry"])
    assert [j.id for j in waiting] == [*ids[2:], waiting[-1].id] and len(waiting) == 9
    assert [j.data for j in pq.find_jobs(key="k1")] == [{"to": "keyed"}]
    assert {j.name for j in pq.find_jobs(data_contains={"to": "u1"})} == {"mail", "other"}
    assert [j.data["n"] for j in pq.find_jobs("mail", group="g1", state="created")] == [3, 5, 7, 9]
    # Pages: each starts after the last id of the one before.
    first = pq.find_jobs("mail", limit=4)
    second = pq.find_jobs("mail", limit=4, after=first[-1].id)
    third = pq.find_jobs("mail", limit=4, after=second[-1].id)
    assert [j.id for j in first + second + third] == [*ids, waiting[-1].id]
    assert len(third) == 3


def test_find_jobs_looks_in_the_archive_when_asked(pq: PgQueue) -> None:
    pq.create_queue("q")
    old, new = pq.insert([{"name": "q", "data": 1}, {"name": "q", "data": 2}])
    pq.complete(pq.fetch("q"), "done")
    pq.move_clock(7200)
    assert pq.maintain().archived == 1
    assert [j.id for j in pq.find_jobs("q")] == [new]
    found = pq.find_jobs("q", archived=True)
    assert [(j.id, j.archived) for j in found] == [(old, True), (new, False)]
    assert [j.id for j in pq.find_jobs("q", state="completed", archived=True)] == [old]


def test_find_jobs_refuses_bad_filters(pq: PgQueue) -> None:
    for bad in (
        {"queue": "bad name"},
        {"state": "sleeping"},
        {"state": ["created", 5]},
        {"key": 5},
        {"data_contains": [1]},
        {"data_contains": {"x": object()}},
        {"limit": 0},
        {"limit": 10_001},
        {"after": -1},
        {"after": True},
    ):
        with pytest.raises(pgqueue.InvalidInputError):
            pq.find_jobs(**bad)


class Order(BaseModel):
    sku: str
    qty: int


def test_update_job_changes_a_waiting_job_and_nothing_else(pq: PgQueue) -> None:
    @pq.job("orders")
    def orders(data: Order) -> None: ...

    pq.start()
    job_id = orders.send(Order(sku="a", qty=1), start_after=3600)
    assert job_id is not None
    before = pq.get_job_by_id(job_id)
    assert before is not None and before.start_after is not None
    changed = pq.update_job(job_id, data=Order(sku="b", qty=2), priority=5)
    assert changed is not None and changed.data == {"sku": "b", "qty": 2}
    assert changed.priority == 5 and changed.start_after == before.start_after
    with pytest.raises(pgqueue.InvalidPayloadError):  # validated by the handler's model
        pq.update_job(job_id, data={"sku": "c"})
    with pytest.raises(pgqueue.InvalidOptionError):
        pq.update_job(job_id, priority=2**40)
    assert pq.get_job_by_id(job_id) == changed  # a refused change writes nothing
    now_due = pq.update_job(job_id, start_after=0)
    assert now_due is not None and now_due.start_after is not None
    assert now_due.start_after < before.start_after
    assert before.keep_until is not None and now_due.keep_until is not None
    # Kept as long after its new start as after its old one.
    assert now_due.keep_until - now_due.start_after == before.keep_until - before.start_after
    (claimed,) = pq.fetch("orders")  # due now
    assert claimed.id == job_id and claimed.data == {"sku": "b", "qty": 2}
    assert pq.update_job(job_id, priority=1) is None  # started: not changed
    assert pq.update_job(999_999, priority=1) is None
    later = pq.update_job(orders.send(Order(sku="z", qty=9)) or 0, start_after=timedelta(hours=1))
    assert later is not None and later.start_after is not None
    assert pq.fetch("orders") == []


async def test_a_handler_snoozes_its_job_without_spending_a_retry(
    apq: pgqueue.AsyncPgQueue,
) -> None:
    seen: list[int] = []

    @apq.job("poll", retry_limit=0)
    async def poll(data: None, job: pgqueue.RunningJob) -> str:
        seen.append(job.attempt)
        if job.attempt < 3:
            try:
                job.snooze(0.2)
            except Exception:  # a handler's catch-all does not swallow it
                raise AssertionError("snooze was caught") from None
        return "ready"

    @apq.job("sync_poll", retry_limit=0)
    def sync_poll(data: None, job: pgqueue.RunningJob) -> str:
        if job.attempt == 1:
            raise pgqueue.Snooze(0)
        return "ready too"

    handle = await poll.send(None)
    other = await sync_poll.send(None)
    assert handle is not None and other is not None
    task = asyncio.create_task(apq.work(poll_interval=0.1))
    assert await handle.result(timeout=15) == "ready"
    assert await other.result(timeout=15) == "ready too"
    apq.stop_working()
    await asyncio.wait_for(task, 15)
    assert seen == [1, 2, 3]
    job = await apq.get_job_by_id(handle)
    assert job is not None and job.retry_count == 0 and job.errors is None  # not failures
    with pytest.raises(pgqueue.InvalidOptionError):
        pgqueue.Snooze(-1)


async def test_a_snoozed_job_waits_its_delay(apq: pgqueue.AsyncPgQueue) -> None:
    @apq.job("later")
    async def later(data: None, job: pgqueue.RunningJob) -> None:
        job.snooze(3600)

    job_id = await later.send(None)
    assert job_id is not None
    drained = await adrain(apq)
    assert [(r.outcome, r.state) for r in drained] == [("snoozed", JobState.retry)]
    job = await apq.get_job_by_id(job_id)
    assert job is not None and job.state is JobState.retry and job.attempt == 1
    assert job.start_after is not None and job.created_at is not None
    assert job.start_after - job.created_at >= timedelta(minutes=59)
    assert await apq.fetch("later") == []
    assert len(await aadvance(apq, 3500)) == 0
    assert [(r.attempt, r.outcome) for r in await aadvance(apq, 200)] == [(2, "snoozed")]


def test_upsert_gives_the_waiting_job_of_a_key_the_latest_data(pq: PgQueue) -> None:
    pq.create_queue("sync")
    first = pq.upsert("sync", {"v": 1}, singleton_key="acct-1")
    assert first is not None
    assert pq.upsert("sync", {"v": 2}, singleton_key="acct-1", priority=7) == first
    assert pq.upsert("sync", {"v": 1}, singleton_key="acct-2") not in (None, first)
    job = pq.get_job_by_id(first)
    assert job is not None and job.data == {"v": 2} and job.priority == 7
    (running,) = [j for j in pq.fetch("sync", 2) if j.id == first]
    assert pq.upsert("sync", {"v": 3}, singleton_key="acct-1") is None  # its job runs
    pq.complete(running)
    after = pq.upsert("sync", {"v": 4}, singleton_key="acct-1")
    assert after not in (None, first)
    with pytest.raises(pgqueue.InvalidOptionError):
        pq.upsert("sync", {"v": 5}, singleton_key="")


def test_concurrent_upserts_leave_one_waiting_job_per_key(pq: PgQueue) -> None:
    pq.create_queue("sync")
    ids: list[int | None] = []
    threads = [
        threading.Thread(target=lambda i=i: ids.append(pq.upsert("sync", i, singleton_key="k")))
        for i in range(16)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(ids) == 16 and len(set(ids)) == 1 and ids[0] is not None
    (job,) = pq.find_jobs("sync")
    assert job.id == ids[0] and job.data in range(16)
