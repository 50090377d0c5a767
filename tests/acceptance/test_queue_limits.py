"""A queue's limits across worker processes: concurrency and rate, killed workers included."""

from __future__ import annotations

import signal
import time
from datetime import datetime

import psycopg
import pytest
from psycopg import sql

import pgqueue
from tests.acceptance.conftest import Workers, count_state, poll_until

pytestmark = pytest.mark.slow


def _most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most spans that overlap at one moment."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    most = running = 0
    for _, step in events:  # an end sorts before a start at the same time
        running += step
        most = max(most, running)
    return most


def _spans(workers: Workers, killed_at: float = 0.0) -> dict[str, list[tuple[float, float]]]:
    """Every handler run as (start, end), by the group its lines name ("" if none); a run
    cut by a kill ends at ``killed_at``."""
    spans: dict[str, list[tuple[float, float]]] = {}
    for path in workers.out.glob("*.spans"):
        started: dict[str, float] = {}
        for line in path.read_text().splitlines():
            kind, job_id, *group, at = line.split()
            key = group[0] if group else ""
            if kind == "start":
                started[job_id] = float(at)
            else:
                spans.setdefault(key, []).append((started.pop(job_id), float(at)))
        spans.setdefault("", []).extend((start, killed_at) for start in started.values())
    return spans


def test_a_queue_runs_at_most_its_concurrency_over_4_processes_and_a_kill(
    dsn: str, schema: str, workers: Workers
) -> None:
    with pgqueue.PgQueue(dsn, schema=schema) as pq:
        pq.create_queue("limited", concurrency=3, heartbeat_seconds=1, retry_delay=0)
        pq.insert([{"name": "limited"} for _ in range(2000)])
    procs = [workers.start("--queues", "limited") for _ in range(4)]
    poll_until(lambda: count_state(dsn, schema, "completed") >= 500, 120, "500 completions")
    procs[0].send_signal(signal.SIGKILL)
    procs[0].wait(30)
    killed_at = time.time()
    poll_until(lambda: count_state(dsn, schema, "completed") == 2000, 240, "2,000 completions")
    assert workers.stop_all()[1:] == [0, 0, 0], workers.stderr()
    spans = _spans(workers, killed_at)[""]
    assert len(spans) >= 2000
    assert _most_at_once(spans) == 3  # the limit, and all of it used


def _starts(dsn: str, schema: str, group: str | None = None) -> list[float]:
    """Seconds from the first start of the queue's jobs (of ``group``) to each one's."""
    with psycopg.connect(dsn) as conn:
        starts: list[datetime] = [
            row[0]
            for row in conn.execute(
                sql.SQL(
                    "SELECT started_at FROM {}.job WHERE %s::text IS NULL OR group_key = %s"
                    " ORDER BY started_at"
                ).format(sql.Identifier(schema)),
                (group, group),
            )
        ]
    return [(s - starts[0]).total_seconds() for s in starts]


def _assert_rate_kept_and_used(seconds: list[float], count: int) -> None:
    """Every window of one second, starting at each start, holds at most ``count`` starts;
    and the limit is used: the starts after the first ``count`` took about as many seconds
    as the limit needs, not much more."""
    ahead = 0
    for first, at in enumerate(seconds):
        while ahead < len(seconds) and seconds[ahead] < at + 1:
            ahead += 1
        assert ahead - first <= count, f"{ahead - first} starts in the second from {at:.3f}s"
    needed = (len(seconds) - count) / count
    assert seconds[-1] <= needed / 0.9, f"{len(seconds)} starts took {seconds[-1]:.1f}s"


def test_a_rate_limit_holds_over_every_window_across_4_processes(
    dsn: str, schema: str, workers: Workers
) -> None:
    with pgqueue.PgQueue(dsn, schema=schema) as pq:
        pq.create_queue("limited", rate_limit=(50, 1))
        pq.insert([{"name": "limited"} for _ in range(550)])
    for _ in range(4):
        workers.start("--queues", "limited")
    poll_until(lambda: count_state(dsn, schema, "completed") == 550, 60, "550 completions")
    assert workers.stop_all() == [0, 0, 0, 0], workers.stderr()
    _assert_rate_kept_and_used(_starts(dsn, schema), 50)


def test_each_groups_rate_limit_holds_across_4_processes(
    dsn: str, schema: str, workers: Workers
) -> None:
    with pgqueue.PgQueue(dsn, schema=schema) as pq:
        pq.create_queue("limited", group_rate_limit=(25, 1))
        pq.insert([{"name": "limited", "group": g} for _ in range(275) for g in "ab"])
    for _ in range(4):
        workers.start("--queues", "limited")
    poll_until(lambda: count_state(dsn, schema, "completed") == 550, 60, "550 completions")
    assert workers.stop_all() == [0, 0, 0, 0], workers.stderr()
    for group in "ab":  # each its own quota, side by side
        _assert_rate_kept_and_used(_starts(dsn, schema, group), 25)


def _waits(dsn: str, schema: str, group: str) -> list[float]:
    """Seconds each job of ``group`` waited from its send to its (last) start."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT extract(epoch FROM started_at - created_at)::float8 FROM {}.job "
                "WHERE group_key = %s AND state = 'completed' ORDER BY id"
            ).format(sql.Identifier(schema)),
            (group,),
        ).fetchall()
    return [row[0] for row in rows]


def _by_group_and_state(dsn: str, schema: str) -> str:
    """What the queue holds when a wait failed, for the failure's message."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT group_key, state::text, count(*) FROM {}.job GROUP BY 1, 2 ORDER BY 1, 2"
            ).format(sql.Identifier(schema))
        ).fetchall()
    return ", ".join(f"{group} {state} {count}" for group, state, count in rows)


def _p99(values: list[float]) -> float:
    return sorted(values)[max(0, round(len(values) * 0.99) - 1)]


def test_one_groups_backlog_hardly_delays_another_group(
    dsn: str, schema: str, workers: Workers
) -> None:
    with pgqueue.PgQueue(dsn, schema=schema) as pq:
        pq.create_queue("tenants", group_concurrency=20)
        for _ in range(2):
            workers.start("--queues", "tenants")
        poll_until(lambda: workers.stderr().count(" started: ") == 2, 60, "two workers ready")
        # Alone: b's 100 jobs, sent one every 20 ms to idle workers.
        for i in range(100):
            pq.send("tenants", i, group="alone")
            time.sleep(0.02)
        poll_until(lambda: len(_waits(dsn, schema, "alone")) == 100, 60, "b's jobs, alone")
        # Behind a's 20,000: the same sends while a's backlog drains.
        for start in range(0, 20_000, 1000):
            pq.insert([{"name": "tenants", "group": "a"} for _ in range(start, start + 1000)])
        for i in range(100):
            pq.send("tenants", i, group="b")
            time.sleep(0.02)
        try:
            poll_until(lambda: len(_waits(dsn, schema, "b")) == 100, 60, "b's jobs, behind a")
        except pytest.fail.Exception:
            seen = _by_group_and_state(dsn, schema)
            pytest.fail(f"b's jobs did not all run: {seen}\n{workers.stderr()[-3000:]}")
        waiting_a = pq.get_queue_stats("tenants")[0].waiting
    assert waiting_a > 0  # a's backlog was still there when b's last job ran
    alone, behind = _p99(_waits(dsn, schema, "alone")), _p99(_waits(dsn, schema, "b"))
    print(f"b's p99 wait: alone {alone * 1000:.1f} ms, behind 20,000 of a {behind * 1000:.1f} ms")
    assert behind <= alone + 0.1  # the stated bound: within 100 ms of its wait alone
    assert workers.stop_all() == [0, 0], workers.stderr()


def test_an_ordered_queue_keeps_each_groups_order_through_failures_over_4_processes(
    dsn: str, schema: str, workers: Workers
) -> None:
    with pgqueue.PgQueue(dsn, schema=schema) as pq:
        pq.create_queue("in_order", ordered=True, retry_limit=20, retry_delay=0)
        pq.insert([{"name": "in_order", "group": f"k{k}"} for _ in range(40) for k in range(50)])
    for _ in range(4):
        workers.start("--queues", "in_order")
    poll_until(lambda: count_state(dsn, schema, "completed") == 2000, 240, "2,000 completions")
    assert workers.stop_all() == [0, 0, 0, 0], workers.stderr()
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT group_key, id, retry_count FROM {}.job ORDER BY group_key, completed_at"
            ).format(sql.Identifier(schema))
        ).fetchall()
    by_group: dict[str, list[int]] = {}
    for group, job_id, _ in rows:
        by_group.setdefault(group, []).append(job_id)
    assert len(by_group) == 50
    for ids in by_group.values():
        assert ids == sorted(ids)  # completed in the order they were sent
    assert sum(retries for _, _, retries in rows) > 100  # failures did happen
    by_group_spans = _spans(workers)
    assert len(by_group_spans.pop("")) == 0  # every run ended (none was killed)
    assert len(by_group_spans) == 50
    # never two of a group at once
    assert all(_most_at_once(spans) == 1 for spans in by_group_spans.values())
