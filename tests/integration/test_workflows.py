"""Jobs that depend on other jobs: flows, parents' outputs, failures that cancel
dependents, and everything refused before anything is written."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql

import pgqueue
from pgqueue import DependencyError, Flow, JobFailedError, JobState, PgQueue
from pgqueue._sql.fragments import ALL_JOB_COLUMNS


def _run_one(pq: PgQueue, queue: str, output: Any = None) -> pgqueue.Job:
    """Claim the next job of ``queue`` and complete it with ``output``."""
    [job] = pq.fetch(queue)
    pq.complete(job, output)
    return job


def _sent(handles: list[pgqueue.JobHandle | None]) -> list[int]:
    """The ids of a flow's jobs, every one of which was sent."""
    assert None not in handles
    return [int(h) for h in handles if h is not None]


def _rows(conn: psycopg.Connection[Any], schema: str, table: str = "job") -> int:
    query = sql.SQL("SELECT count(*) FROM {}.{}").format(
        sql.Identifier(schema), sql.Identifier(table)
    )
    row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def test_a_diamond_runs_each_job_once_its_parents_completed(pq: PgQueue) -> None:
    pq.create_queue("q")
    flow = Flow()
    a = flow.add("q", "a")
    b = flow.add("q", "b", depends_on=[a])
    c = flow.add("q", "c", depends_on=[a])
    flow.add("q", "d", depends_on=[b, c])
    ids = _sent(pq.send_flow(flow))
    assert [getattr(pq.get_job_by_id(i), "parents_left", None) for i in ids] == [0, 1, 1, 2]
    root = pq.get_job_by_id(ids[0])
    assert root is not None and root.children == ids[1:3] and root.depends_on is None
    assert pq.fetch("q", 10)[0].data == "a"  # only a can run
    assert pq.fetch("q", 10) == []
    pq.complete(ids[0], 1)
    middle = pq.fetch("q", 10)
    assert sorted(j.data for j in middle) == ["b", "c"]
    pq.complete(middle[0], 10)
    assert pq.fetch("q", 10) == []  # d waits for both
    pq.complete(middle[1], 100)
    [d] = pq.fetch("q", 10)
    assert d.data == "d" and d.depends_on == ids[1:3]
    assert [p.output for p in pq.parents(d)] == [
        {middle[0].id: 10, middle[1].id: 100}[i] for i in ids[1:3]
    ]


def test_a_failed_parent_cancels_its_dependents_and_theirs_with_the_reason(
    pq: PgQueue,
) -> None:
    pq.create_queue("q", retry_limit=0)
    flow = Flow()
    a = flow.add("q", "a")
    b = flow.add("q", "b", depends_on=[a])
    flow.add("q", "c", depends_on=[b])
    anyway = flow.add("q", "anyway", depends_on=[a], on_parent_failure="run")
    flow.add("q", "after anyway", depends_on=[anyway])
    ids = _sent(pq.send_flow(flow))
    [first] = pq.fetch("q")
    pq.fail(first, "broken")
    jobs = [pq.get_job_by_id(i) for i in ids]
    assert [j.state for j in jobs if j] == [
        JobState.failed,
        JobState.cancelled,
        JobState.cancelled,
        JobState.created,
        JobState.created,
    ]
    assert jobs[1] is not None and jobs[1].output == {
        "type": "ParentFailed",
        "message": f"job {ids[0]}, which it depends on, failed",
        "parent": ids[0],
        "parent_state": "failed",
    }
    assert jobs[2] is not None and jobs[2].output["parent"] == ids[0]  # the cause, two away
    # The job that runs anyway runs now, and the one after it once it completed.
    assert [j.data for j in pq.fetch("q", 10)] == ["anyway"]
    pq.complete(ids[3])
    assert [j.data for j in pq.fetch("q", 10)] == ["after anyway"]
    with pytest.raises(JobFailedError) as raised:
        pq.result(ids[2], timeout=5)
    assert raised.value.state == "cancelled" and raised.value.error["type"] == "ParentFailed"


@pytest.mark.parametrize("how", ["cancel", "delete", "expire"])
def test_a_parent_cancelled_deleted_or_expired_cancels_its_dependents(
    pq: PgQueue, how: str
) -> None:
    pq.create_queue("q", retention=60)
    parent = pq.send("q", "parent")
    assert parent is not None
    child = pq.send("q", "child", depends_on=[parent])
    assert child is not None
    if how == "cancel":
        pq.cancel(parent)
    elif how == "delete":
        pq.delete_job(parent)
    else:
        pq.move_clock(120)  # the parent waited past its retention; the child is held
        pq.maintain()
    job = pq.get_job_by_id(child)
    state = {"cancel": "cancelled", "delete": "deleted", "expire": "expired"}[how]
    assert job is not None and job.state == JobState.cancelled
    assert job.output["parent_state"] == state


def test_a_chain_of_1000_is_cancelled_from_its_head_in_one_statement(pq: PgQueue) -> None:
    pq.create_queue("q", retry_limit=0)
    flow = Flow()
    step = flow.add("q", 0)
    for n in range(1, 1000):
        step = flow.add("q", n, depends_on=[step])
    ids = _sent(pq.send_flow(flow))
    [head] = pq.fetch("q")
    pq.fail(head, "broken")
    states = {j.state for j in pq.find_jobs("q", limit=1000, after=ids[0])}
    assert states == {JobState.cancelled}


def test_depends_on_names_jobs_sent_before_whatever_they_became(pq: PgQueue) -> None:
    pq.create_queue("q", retry_limit=0)
    done = pq.send("q", "done")
    _run_one(pq, "q", "its output")
    failed = pq.send("q", "failed")
    pq.fail(pq.fetch("q"), "broken")
    waiting = pq.send("q", "waiting")
    assert done is not None and failed is not None and waiting is not None
    runs_now = pq.send("q", "after done", depends_on=[done])
    born_cancelled = pq.send("q", "after failed", depends_on=[done, failed])
    held = pq.send(
        "q", "after waiting", depends_on=[pgqueue.Job(waiting, "q", None, JobState.created)]
    )
    anyway = pq.send("q", "anyway", depends_on=[failed], on_parent_failure="run")
    assert [j.id for j in pq.find_jobs("q", state="created", after=waiting)] == [
        runs_now,
        held,
        anyway,
    ]
    cancelled = pq.get_job_by_id(born_cancelled)  # type: ignore[arg-type]
    assert cancelled is not None and cancelled.state == JobState.cancelled
    assert cancelled.output["parent"] == failed
    assert pq.get_job_by_id(held).parents_left == 1  # type: ignore[arg-type,union-attr]
    ran = [j.data for j in pq.fetch("q", 10)]
    assert ran == ["waiting", "after done", "anyway"]


def test_unknown_parents_cycles_and_bad_options_are_refused_writing_nothing(
    pq: PgQueue, schema: str, conn: psycopg.Connection[Any]
) -> None:
    pq.create_queue("q")
    parent = pq.send("q")
    assert parent is not None
    before = _rows(conn, schema)
    with pytest.raises(DependencyError, match="no job 999999 to depend on"):
        pq.send("q", depends_on=[parent, 999999])
    with pytest.raises(DependencyError, match="no job 999999"):
        pq.insert([{"name": "q"}, {"name": "q", "depends_on": [999999]}])
    flow = Flow()
    a = flow.add("q", "a")
    b = flow.add("q", "b", depends_on=[a])
    a.after(b)
    with pytest.raises(DependencyError, match="cycle: #0 \\('q'\\) -> #1 \\('q'\\) -> #0"):
        pq.send_flow(flow)
    with pytest.raises(pgqueue.InvalidInputError, match="another flow"):
        Flow().add("q", depends_on=[a])
    for bad in ("1", [True], [0], [-1], [2**63], [1.5], 5):
        with pytest.raises(pgqueue.InvalidOptionError, match="depends_on"):
            pq.send("q", depends_on=bad)
    with pytest.raises(pgqueue.InvalidOptionError, match="on_parent_failure"):
        pq.send("q", depends_on=[parent], on_parent_failure="ignore")
    with pytest.raises(pgqueue.InvalidOptionError, match="publish"):
        pq.publish("event", depends_on=[parent])
    with pytest.raises(pgqueue.QueueNotFoundError):
        pq.send("nope", depends_on=[parent])
    assert _rows(conn, schema) == before
    row = conn.execute(
        sql.SQL("SELECT dependents FROM {}.job WHERE id = %s").format(sql.Identifier(schema)),
        (parent,),
    ).fetchone()
    assert row == (False,)  # the parent was not even marked


def test_a_flow_whose_parent_a_singleton_blocks_is_refused_whole(
    pq: PgQueue, schema: str, conn: psycopg.Connection[Any]
) -> None:
    pq.create_queue("q")
    pq.send("q", singleton_key="only")
    before = _rows(conn, schema)
    flow = Flow()
    a = flow.add("q", singleton_key="only")
    flow.add("q", depends_on=[a])
    with pytest.raises(DependencyError, match="blocked step #0"):
        pq.send_flow(flow)
    assert _rows(conn, schema) == before
    # A blocked job nothing depends on is left out, as send leaves it out.
    flow = Flow()
    a = flow.add("q")
    flow.add("q", singleton_key="only", depends_on=[a])
    assert pq.send_flow(flow)[1] is None


def test_a_dependent_sent_in_a_rolled_back_transaction_leaves_nothing(
    pq: PgQueue, dsn: str, schema: str, conn: psycopg.Connection[Any]
) -> None:
    pq.create_queue("q")
    parent = pq.send("q")
    before = _rows(conn, schema)
    with psycopg.connect(dsn) as own:
        flow = Flow()
        flow.add("q", depends_on=[flow.add("q"), parent])  # type: ignore[list-item]
        pq.send_flow(flow, conn=own)
        pq.send("q", depends_on=[parent], conn=own)
        own.rollback()
    assert _rows(conn, schema) == before
    job = pq.get_job_by_id(parent)  # type: ignore[arg-type]
    assert job is not None and job.children == []


def test_a_parent_ending_while_a_dependent_is_sent_is_counted_either_way(
    pq: PgQueue, dsn: str
) -> None:
    """The sender holds the parent until it commits: the completion waits, then counts
    the new job among the parent's dependents."""
    pq.create_queue("q")
    parent = pq.send("q", "parent")
    [running] = pq.fetch("q")
    completed = threading.Event()
    with psycopg.connect(dsn) as own:
        child = pq.send("q", "child", depends_on=[parent], conn=own)

        def complete() -> None:
            pq.complete(running, "done")
            completed.set()

        finisher = threading.Thread(target=complete)
        finisher.start()
        assert not completed.wait(0.5)  # held by the open transaction
        own.commit()
    finisher.join(10)
    assert completed.is_set()
    [job] = pq.fetch("q")
    assert job.id == child


def test_edges_move_to_the_archive_and_go_with_their_jobs(pq: PgQueue) -> None:
    pq.create_queue("q")
    parent = pq.send("q")
    _run_one(pq, "q", 2)
    child = pq.send("q", depends_on=[parent])
    _run_one(pq, "q", 3)
    pq.move_clock(7200)
    assert pq.maintain().archived == 2
    archived = pq.get_job_by_id(child)  # type: ignore[arg-type]
    assert archived is not None and archived.archived and archived.depends_on == [parent]
    found = pq.get_job_by_id(parent)  # type: ignore[arg-type]
    assert found is not None and found.archived and found.children == [child]
    assert [p.output for p in pq.parents(archived)] == [2]
    pq.delete_job([parent, child])  # type: ignore[list-item]
    assert pq.get_job_by_id(child) is None  # type: ignore[arg-type]


def test_a_held_job_keeps_a_new_start_until_its_parents_completed(pq: PgQueue) -> None:
    pq.create_queue("q")
    parent = pq.send("q")
    child = pq.send("q", "child", depends_on=[parent])
    assert child is not None
    changed = pq.update_job(child, start_after=0, priority=5)
    assert changed is not None and changed.priority == 5
    [first] = pq.fetch("q", 10)
    assert first.id == parent  # the child is still held
    pq.update_job(child, start_after=3600)
    pq.complete(first)
    assert pq.fetch("q") == []  # now it waits for its own start
    job = pq.get_job_by_id(child)
    assert job is not None and job.start_after is not None and job.parents_left == 0
    assert 3500 < (job.start_after - pq.now()).total_seconds() <= 3600


def test_a_cancelled_dependent_resumes_once_its_parents_completed(
    pq: PgQueue, schema: str, conn: psycopg.Connection[Any]
) -> None:
    pq.create_queue("q", retention=600)
    parent = pq.send("q", "parent")
    child = pq.send("q", "child", depends_on=[parent])
    other = pq.send("q", "other", depends_on=[parent])
    assert parent is not None and child is not None and other is not None
    held = pq.get_job_by_id(child)
    assert held is not None and held.start_after is not None and held.keep_until is not None
    assert held.start_after.year == 9000
    assert (held.keep_until - held.start_after).total_seconds() == 600  # its retention
    pq.cancel([child, other])
    assert pq.resume(child) == []  # its parent has not completed: it stays cancelled
    [running] = pq.fetch("q", 10)
    assert running.id == parent
    pq.complete(running)
    assert pq.fetch("q", 10) == []  # cancelled jobs are not released
    assert pq.resume(child) == [child]
    resumed = pq.get_job_by_id(child)
    assert resumed is not None and resumed.keep_until and resumed.start_after
    assert (resumed.keep_until - resumed.start_after).total_seconds() == 600
    assert [j.id for j in pq.fetch("q", 10)] == [child]
    assert _rows(conn, schema, "job_wait") == 1  # the other cancelled one's
    assert pq.maintain().waits == 1
    assert _rows(conn, schema, "job_wait") == 0


def test_a_parent_retried_after_it_failed_is_not_counted_twice(pq: PgQueue) -> None:
    pq.create_queue("q", retry_limit=0)
    first = pq.send("q", "first")
    second = pq.send("q", "second", priority=-1)
    child = pq.send("q", "child", depends_on=[first, second], on_parent_failure="run")
    assert first is not None and second is not None and child is not None
    [running] = pq.fetch("q")
    assert running.id == first
    pq.fail(running, "broken")  # the child runs anyway: one parent fewer to wait for
    assert getattr(pq.get_job_by_id(child), "parents_left", None) == 1
    assert pq.retry(first) == [first]
    [again] = pq.fetch("q")
    assert again.id == first
    pq.complete(again)  # its end was counted already
    assert getattr(pq.get_job_by_id(child), "parents_left", None) == 1
    assert [j.id for j in pq.fetch("q", 10)] == [second]
    pq.complete(second)
    assert [j.id for j in pq.fetch("q", 10)] == [child]


def test_a_parent_moved_to_the_archive_while_a_dependent_is_sent_counts_as_completed(
    pq: PgQueue, dsn: str, schema: str
) -> None:
    """The sender finds its parent gone from the job table (the archive pass moved it
    meanwhile) and looks again: it completed, so the dependent runs."""
    pq.create_queue("q")
    parent = pq.send("q", "parent")
    _run_one(pq, "q", "done")
    ident = sql.Identifier(schema)
    with psycopg.connect(dsn) as archiver:  # an archive pass, not committed yet
        archiver.execute(
            sql.SQL(
                "WITH moved AS (DELETE FROM {0}.job WHERE id = %s RETURNING *) "
                "INSERT INTO {0}.archive ({1}, delete_at) SELECT {1}, now() FROM moved"
            ).format(ident, sql.SQL(ALL_JOB_COLUMNS)),
            (parent,),
        )
        sent: list[int | None] = []
        sender = threading.Thread(target=lambda: sent.append(pq.send("q", depends_on=[parent])))
        sender.start()
        sender.join(0.5)
        assert sender.is_alive()  # waiting for the parent's row
        archiver.commit()
    sender.join(10)
    child = pq.get_job_by_id(sent[0] or 0)
    assert child is not None and child.state == JobState.created and child.parents_left == 0
    assert [j.id for j in pq.fetch("q")] == [child.id]


def test_options_that_would_drop_a_dependency_are_refused(pq: PgQueue) -> None:
    pq.create_queue("q")
    parent = pq.send("q")
    sends: list[Callable[[], object]] = [
        lambda: pq.send(
            "q",
            depends_on=[parent],
            singleton_key="k",
            singleton_seconds=60,
            singleton_next_slot=True,
        ),
        lambda: pq.send_debounced("q", None, 60, "k", depends_on=[parent]),
        lambda: pq.upsert("q", singleton_key="k", depends_on=[parent]),
    ]
    for send in sends:
        with pytest.raises(pgqueue.InvalidOptionError, match="depends_on"):
            send()
    assert len(pq.find_jobs("q")) == 1


def test_a_held_job_of_an_ordered_queue_does_not_hold_its_group(pq: PgQueue) -> None:
    pq.create_queue("q", ordered=True)
    parent = pq.send("q", "parent", group="g", priority=-1)
    child = pq.send("q", "child", group="g", priority=5, depends_on=[parent])
    after = pq.send("q", "after", group="g", priority=-2)
    [first] = pq.fetch("q", 10)  # the held child is not in line: its parent goes first
    assert first.id == parent
    pq.complete(first)
    assert [j.id for j in pq.fetch("q", 10)] == [child]  # released, it takes its place
    pq.complete(child or 0)
    assert [j.id for j in pq.fetch("q", 10)] == [after]


def test_completions_and_senders_lock_jobs_in_one_order(pq: PgQueue, dsn: str) -> None:
    """A sender holds the parents it names until it commits; a completion of several of
    them locks them in id order too, so the two wait for each other, never deadlock."""
    pq.create_queue("q")
    first, second = pq.insert([{"name": "q"}, {"name": "q"}])
    claimed = pq.fetch("q", 2)
    done: list[list[int]] = []
    with psycopg.connect(dsn) as own:
        pq.send("q", depends_on=[first], conn=own)  # holds the first
        completer = threading.Thread(target=lambda: done.append(pq.complete(claimed[::-1])))
        completer.start()
        completer.join(0.5)
        assert completer.is_alive()
        pq.send("q", depends_on=[second], conn=own)  # no deadlock: the second is free
        own.commit()
    completer.join(10)
    assert sorted(done[0]) == sorted([first or 0, second or 0])
    assert len(pq.fetch("q", 10)) == 2  # both dependents released


def test_a_refused_flow_leaves_the_callers_transaction_usable(
    pq: PgQueue, dsn: str, schema: str
) -> None:
    pq.create_queue("q")
    pq.send("q", singleton_key="only")
    with psycopg.connect(dsn) as own:
        kept = pq.send("q", "kept", conn=own)
        flow = Flow()
        flow.add("q", depends_on=[flow.add("q", singleton_key="only")])
        with pytest.raises(DependencyError, match="blocked"):
            pq.send_flow(flow, conn=own)
        also = pq.send("q", "also", conn=own)  # the transaction goes on
        own.commit()
    assert {j.data for j in pq.find_jobs("q")} == {None, "kept", "also"}
    assert kept is not None and also is not None


def test_a_long_list_of_unknown_parents_is_named_in_short(pq: PgQueue) -> None:
    pq.create_queue("q")
    with pytest.raises(DependencyError) as raised:
        pq.send("q", depends_on=range(1000, 1100))
    assert str(raised.value) == (
        "no job 1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 1009 (and 90 more) "
        "to depend on"
    )


@pytest.mark.parametrize("again", ["resume", "retry"])
def test_a_parent_ending_again_with_new_dependents_counts_once_for_the_old(
    pq: PgQueue, again: str
) -> None:
    pq.create_queue("q", retry_limit=0)
    parent = pq.send("q", "parent")
    later = pq.send("q", "later", start_after=3600)
    anyway = pq.send("q", "anyway", depends_on=[parent, later], on_parent_failure="run")
    assert parent is not None and anyway is not None
    if again == "resume":
        pq.cancel(parent)
        assert pq.resume(parent) == [parent]
    else:
        pq.fail(pq.fetch("q"), "broken")
        assert pq.retry(parent) == [parent]
    assert getattr(pq.get_job_by_id(anyway), "parents_left", None) == 1
    newer = pq.send("q", "newer", depends_on=[parent])  # the parent has dependents again
    [running] = pq.fetch("q")
    pq.complete(running)  # tells "newer", not "anyway" a second time
    assert getattr(pq.get_job_by_id(anyway), "parents_left", None) == 1
    assert [j.id for j in pq.fetch("q", 10)] == [newer]


def test_a_cancelled_dependent_resumes_once_none_of_its_parents_is_to_run(
    pq: PgQueue,
) -> None:
    pq.create_queue("q", retry_limit=0)
    gone = pq.send("q", "gone")
    failed = pq.send("q", "failed")
    pq.complete(pq.fetch("q"))
    pq.fail(pq.fetch("q"), "broken")
    child = pq.send("q", "child", depends_on=[gone], start_after=3600)
    anyway = pq.send("q", "anyway", depends_on=[failed], on_parent_failure="run")
    assert gone is not None and child is not None and anyway is not None
    pq.delete_job(gone)
    pq.cancel([child, anyway])
    # A parent deleted after it completed, or one that failed, holds nothing back.
    assert sorted(pq.resume([child, anyway])) == sorted([child, anyway])
