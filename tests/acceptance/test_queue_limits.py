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


def _spans(workers: Workers, killed_at: float) -> list[tuple[float, float]]:
    """Every handler run as (start, end); a run cut by the kill ends at the kill."""
    spans = []
    for path in workers.out.glob("*.spans"):
        started: dict[str, float] = {}
        for line in path.read_text().splitlines():
            kind, job_id, at = line.split()
            if kind == "start":
                started[job_id] = float(at)
            else:
                spans.append((started.pop(job_id), float(at)))
        spans += [(start, killed_at) for start in started.values()]
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
    spans = _spans(workers, killed_at)
    assert len(spans) >= 2000
    assert _most_at_once(spans) == 3  # the limit, and all of it used


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
    with psycopg.connect(dsn) as conn:
        starts: list[datetime] = [
            row[0]
            for row in conn.execute(
                sql.SQL("SELECT started_at FROM {}.job ORDER BY started_at").format(
                    sql.Identifier(schema)
                )
            )
        ]
    seconds = [(s - starts[0]).total_seconds() for s in starts]
    # Every window of one second, starting at each start, holds at most 50 starts.
    ahead = 0
    for first, at in enumerate(seconds):
        while ahead < len(seconds) and seconds[ahead] < at + 1:
            ahead += 1
        assert ahead - first <= 50, f"{ahead - first} starts in the second from {at:.3f}s"
    # And the limit is used: 500 starts after the first 50 took about 10 s, not much more.
    assert seconds[-1] <= 500 / 50 / 0.9, f"550 starts took {seconds[-1]:.1f}s"
