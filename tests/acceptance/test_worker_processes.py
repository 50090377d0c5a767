"""Workers as real processes: many at once, killed, and across a PostgreSQL restart."""

from __future__ import annotations

import os
import signal

import pytest

import pgqueue
from tests.acceptance.conftest import RestartableServer, Workers, count_state, poll_until

pytestmark = pytest.mark.slow


def test_20000_jobs_over_4_processes_run_exactly_once(
    dsn: str, schema: str, workers: Workers
) -> None:
    with pgqueue.PgQueue(dsn, schema=schema) as pq:
        pq.create_queue("count")
        ids = []
        for start in range(0, 20_000, 1000):
            ids += pq.insert([{"name": "count", "data": i} for i in range(start, start + 1000)])
    for _ in range(4):
        workers.start("--queues", "count", "--concurrency", "20")
    poll_until(lambda: count_state(dsn, schema, "completed") == 20_000, 240, "20,000 completions")
    assert workers.stop_all() == [0, 0, 0, 0], workers.stderr()
    executions = workers.executions()
    assert set(executions) == set(ids)
    assert max(executions.values()) == 1
    assert len({pid for _, pid, _ in workers.runs()}) == 4  # every process took a share


def test_postgres_restart_while_draining(
    restartable_server: RestartableServer, schema: str, workers: Workers
) -> None:
    dsn = restartable_server.dsn
    workers.dsn = dsn
    with pgqueue.PgQueue(dsn, schema=schema) as pq:
        pq.create_queue("count_slowly", heartbeat_seconds=2)
        for start in range(0, 5000, 1000):
            pq.insert([{"name": "count_slowly", "data": i} for i in range(start, start + 1000)])
    proc = workers.start("--queues", "count_slowly", "--concurrency", "10")
    poll_until(lambda: len(workers.executions()) >= 1000, 120, "1,000 executions")
    restartable_server.restart()
    poll_until(
        lambda: count_state(dsn, schema, "completed") == 5000,
        180,
        "5,000 completions after the restart",
    )
    assert proc.poll() is None, "the worker must survive the restart"
    assert workers.stop_all() == [0], workers.stderr()
    assert "reconnecting" in workers.stderr() or "failed" in workers.stderr()
    # Each connection lost is logged, and so is its return.
    assert "notification connection back after" in workers.stderr()
    if "claiming jobs failed" in workers.stderr():
        assert "claiming jobs works again after" in workers.stderr()


def test_sigkilled_worker_jobs_run_again_elsewhere(dsn: str, schema: str, workers: Workers) -> None:
    with pgqueue.PgQueue(dsn, schema=schema) as pq:
        pq.create_queue("hold", heartbeat_seconds=2, retry_delay=0)
        job_id = pq.send("hold")
    first = workers.start("--queues", "hold")
    poll_until(lambda: len(workers.runs()) == 1, 60, "the first run to start")
    assert workers.runs()[0][1] == first.pid
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    second = workers.start("--queues", "hold", "--poll-interval", "0.5")
    poll_until(
        lambda: count_state(dsn, schema, "completed") == 1,
        60,
        "the job to complete on the second worker",
    )
    runs = sorted(workers.runs(), key=lambda run: run[2])  # by retry count
    assert runs == [(job_id, first.pid, 0), (job_id, second.pid, 1)]


def test_sigterm_waits_for_active_jobs_and_a_second_signal_stops_at_once(
    dsn: str, schema: str, workers: Workers
) -> None:
    with pgqueue.PgQueue(dsn, schema=schema) as pq:
        pq.create_queue("hold_first_run", retry_delay=0)
        job_id = pq.send("hold_first_run")
    first = workers.start("--queues", "hold_first_run", "--shutdown-timeout", "600")
    poll_until(lambda: len(workers.runs()) == 1, 60, "the job to start")
    first.send_signal(signal.SIGTERM)
    poll_until(
        lambda: "finishing active jobs" in workers.stderr(), 30, "the worker to acknowledge SIGTERM"
    )
    # A graceful stop waits for the running job (up to the shutdown timeout)...
    assert first.poll() is None and count_state(dsn, schema, "active") == 1
    first.send_signal(signal.SIGINT)
    # ...and a second signal stops at once, handing the job back (not as a failure).
    assert first.wait(30) == 0, workers.stderr()
    assert count_state(dsn, schema, "retry") == 1
    second = workers.start("--queues", "hold_first_run")
    poll_until(
        lambda: count_state(dsn, schema, "completed") == 1,
        60,
        "the job to complete on the second worker",
    )
    assert sorted(workers.runs()) == sorted([(job_id, first.pid, 0), (job_id, second.pid, 0)])
