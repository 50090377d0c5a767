"""Every event from every state, on a real database, against the one transition table."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from pgqueue import Job, JobState, MaintenanceSettings, PgQueue
from pgqueue.lifecycle import Event, mermaid, targets

# What each event is, done through the API; each returns whether the API said it acted.
Apply = Callable[[PgQueue, Job], bool]


def _release(pq: PgQueue, job: Job) -> bool:
    return pq.release(job) == [job.id]


def _maintain(pq: PgQueue, field: str, seconds: float) -> bool:
    pq.move_clock(seconds)
    return int(getattr(pq.maintain(), field)) > 0


def _archive(pq: PgQueue, job: Job) -> bool:
    pq.maintenance_settings = MaintenanceSettings(archive_completed_after=0, archive_failed_after=0)
    return _maintain(pq, "archived", 1)


EVENTS: dict[str, tuple[Event, bool | None, dict[str, Any], Apply]] = {
    # name: (event, retries left, options of the job, how to do it)
    "claim": (Event.claim, None, {}, lambda pq, job: bool(pq.fetch("q"))),
    "complete": (Event.complete, None, {}, lambda pq, job: bool(pq.complete(job, "ok"))),
    "fail": (Event.fail, True, {"retry_limit": 5}, lambda pq, job: bool(pq.fail(job, "x"))),
    "fail for good": (
        Event.fail,
        False,
        {"retry_limit": 0},
        lambda pq, job: bool(pq.fail(job, "x")),
    ),
    "expire": (
        Event.expire,
        True,
        {"retry_limit": 5, "expire_in": 60},
        lambda pq, job: _maintain(pq, "expired_active", 61),
    ),
    "expire for good": (
        Event.expire,
        False,
        {"retry_limit": 0, "expire_in": 60},
        lambda pq, job: _maintain(pq, "expired_active", 61),
    ),
    "release": (Event.release, None, {}, _release),
    "outwait": (
        Event.outwait,
        None,
        {"retention": 60},
        lambda pq, job: _maintain(pq, "expired_waiting", 61),
    ),
    "cancel": (Event.cancel, None, {}, lambda pq, job: bool(pq.cancel(job.id))),
    "resume": (Event.resume, None, {}, lambda pq, job: bool(pq.resume(job.id))),
    "retry": (Event.retry, None, {}, lambda pq, job: bool(pq.retry(job.id))),
    "archive": (Event.archive, None, {}, _archive),
    "delete": (Event.delete, None, {}, lambda pq, job: bool(pq.delete_job(job.id))),
}


def into(pq: PgQueue, state: JobState, options: dict[str, Any]) -> Job:
    """A job of queue q brought into ``state`` the way jobs get there, and the run that last
    held it (its Job as fetched, or as it is now if never claimed)."""
    job_id = pq.send("q", None, **options)
    assert job_id is not None
    run = pq.get_job_by_id(job_id)
    assert run is not None
    if state is not JobState.created and state is not JobState.cancelled:
        (run,) = pq.fetch("q")
    if state is JobState.retry:
        pq.release(run)
    elif state is JobState.completed:
        pq.complete(run)
    elif state is JobState.failed:
        pq.fail(run, "x", retry=False)
    elif state is JobState.expired:  # handed back, then left waiting past its retention
        pq.release(run)
        waiting = pq.get_job_by_id(job_id)
        assert waiting is not None and waiting.keep_until is not None
        pq.move_clock((waiting.keep_until - pq.now()).total_seconds() + 1)
        assert pq.maintain().expired_waiting == 1
    elif state is JobState.cancelled:
        pq.cancel(job_id)
    now = pq.get_job_by_id(job_id)
    assert run is not None and now is not None and now.state is state
    return run


@pytest.mark.parametrize("state", list(JobState), ids=lambda s: s.value)
@pytest.mark.parametrize("name", list(EVENTS))
def test_each_event_from_each_state_follows_the_table(
    dsn: str, schema: str, state: JobState, name: str
) -> None:
    event, retries_left, options, apply = EVENTS[name]
    with PgQueue(dsn, schema=schema, maintenance=False) as pq:
        pq.create_queue("q")
        run = into(pq, state, options)
        acted = apply(pq, run)
        after = pq.get_job_by_id(run.id)
    expected = targets(state, event, retries_left, blocked=False)
    assert len(expected) <= 1, expected
    if not expected:
        assert not acted
        assert after is not None and not after.archived and after.state is state
    else:
        (target,) = expected
        assert acted
        if target is None:  # out of the job table: archived, or gone
            assert after is None if event is Event.delete else (after and after.archived)
        else:
            assert after is not None and not after.archived and after.state is target


def test_a_run_that_lost_its_job_changes_nothing_from_any_state(pq: PgQueue) -> None:
    # The transitions that name a run (complete, fail, release, heartbeat) refuse an
    # earlier run's, whatever the job's state.
    pq.create_queue("q", retry_limit=5)
    pq.send("q")
    (stale,) = pq.fetch("q")
    pq.release(stale)
    (current,) = pq.fetch("q")
    assert current.attempt == stale.attempt + 1
    assert pq.complete(stale) == pq.fail(stale) == pq.touch(stale) == []
    assert _release(pq, stale) is False
    # A bare id names whichever run holds the job now, for release as for the others.
    assert pq.release(current.id) == [current.id]
    (current,) = pq.fetch("q")
    job = pq.get_job_by_id(current.id)
    assert job is not None and job.state is JobState.active and job.attempt == current.attempt


def test_the_documented_diagram_is_the_table() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text()
    assert f"```mermaid\n{mermaid()}\n```" in text, (
        "docs/architecture.md: replace the state diagram with pgqueue.lifecycle.mermaid()"
    )


def test_archive_waits_for_its_delay(pq: PgQueue) -> None:
    # The table's archive transition needs its delay: a fresh completion stays put.
    pq.create_queue("q")
    pq.send("q")
    (run,) = pq.fetch("q")
    pq.complete(run)
    pq.move_clock(timedelta(minutes=59))
    assert pq.maintain().archived == 0
    pq.move_clock(timedelta(minutes=2))
    assert pq.maintain().archived == 1


def test_runs_given_more_json_than_one_statement_takes_are_written_in_parts(
    pq: PgQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Several runs given one large output or progress: each statement carries at most
    # _BATCH_BYTES of it (jsonb holds 256 MiB in one value); here the bound is made small.
    from pgqueue import _core

    monkeypatch.setattr(_core, "_BATCH_BYTES", 200)
    pq.create_queue("q", retry_limit=0)
    pq.insert([{"name": "q", "data": i} for i in range(12)])
    jobs = pq.fetch("q", batch_size=12)
    big = {"text": "x" * 150}  # one run's row alone fills most of a statement
    parts = _core._batches([1, 2, 3], [7, None, 9], (['{"text":"' + "x" * 150 + '"}'] * 3,))
    assert len(parts) == 3  # one run each
    assert [row for part in parts for row in json.loads(part)] == [
        [i, run, big] for i, run in ((1, 7), (2, None), (3, 9))
    ]
    assert sorted(pq.touch(jobs[:4], big)) == sorted(j.id for j in jobs[:4])
    assert sorted(pq.complete(jobs[:4], big)) == sorted(j.id for j in jobs[:4])
    assert sorted(pq.fail(jobs[4:8], big)) == sorted(j.id for j in jobs[4:8])
    assert sorted(pq.release(jobs[8:])) == sorted(j.id for j in jobs[8:])
    for job in jobs:
        now = pq.get_job_by_id(job.id)
        assert now is not None
        if job in jobs[:4]:
            assert now.state is JobState.completed and now.output == big
            assert now.last_progress == big
        elif job in jobs[4:8]:
            assert now.state is JobState.failed and now.output["text"] == big["text"]
        else:
            assert now.state is JobState.retry
