from __future__ import annotations

import pgqueue


def test_send_fetch_complete_sync(pq: pgqueue.PgQueue) -> None:
    pq.create_queue("q")
    job_id = pq.send("q", {"n": 1})
    (job,) = pq.fetch("q")
    assert job.id == job_id and job.data == {"n": 1} and job.state is pgqueue.JobState.active
    assert pq.complete(job_id, {"ok": True}) == [job_id]
    stored = pq.get_job_by_id(job_id)
    assert stored is not None and stored.state is pgqueue.JobState.completed
    assert stored.output == {"ok": True}


async def test_send_fetch_complete_async(apq: pgqueue.AsyncPgQueue) -> None:
    await apq.create_queue("q")
    job_id = await apq.send("q", {"n": 1})
    (job,) = await apq.fetch("q")
    assert job.id == job_id
    assert await apq.complete(job_id) == [job_id]
