"""Workflows across worker processes: a diamond, and a map/reduce over 10,000 items with a
worker killed halfway."""

from __future__ import annotations

import signal

import pytest

import pgqueue
from tests.acceptance.conftest import Workers, count_state, poll_until

pytestmark = pytest.mark.slow


def test_a_diamond_runs_each_step_after_its_parents_over_4_processes(
    dsn: str, schema: str, workers: Workers
) -> None:
    with pgqueue.PgQueue(dsn, schema=schema) as pq:
        pq.create_queue("wf_node")
        diamonds = []
        for _ in range(20):
            flow = pgqueue.Flow()
            a = flow.add("wf_node", {"add": 1})
            b = flow.add("wf_node", {"add": 10}, depends_on=[a])
            c = flow.add("wf_node", {"add": 100}, depends_on=[a])
            flow.add("wf_node", {"add": 1000}, depends_on=[b, c])
            diamonds.append(pq.send_flow(flow))
        for _ in range(4):
            workers.start("--queues", "wf_node")
        for handles in diamonds:
            d = handles[3]
            assert d is not None
            # d adds b's output (a + 10) and c's (a + 100): a's reaches it by both paths
            assert d.result(timeout=60) == (1 + 10) + (1 + 100) + 1000
        runs = workers.executions()
        assert sorted(runs.values()) == [1] * 80  # each step ran once
        for handles in diamonds:
            spans = []
            for handle in handles:
                job = pq.get_job_by_id(handle) if handle is not None else None
                assert job is not None and job.started_at and job.completed_at
                spans.append((job.started_at, job.completed_at))
            (_, a_end), (b_start, b_end), (c_start, c_end), (d_start, _) = spans
            assert a_end <= b_start and a_end <= c_start
            assert b_end <= d_start and c_end <= d_start
    assert workers.stop_all() == [0, 0, 0, 0], workers.stderr()


def test_a_map_reduce_over_10000_items_survives_a_killed_worker(
    dsn: str, schema: str, workers: Workers
) -> None:
    items = 10_000
    with pgqueue.PgQueue(dsn, schema=schema) as pq:
        pq.create_queue("wf_map")
        pq.create_queue("wf_reduce")
        flow = pgqueue.Flow()
        mapped = [flow.add("wf_map", {"n": n}) for n in range(items)]
        flow.add("wf_reduce", depends_on=mapped)
        handles = pq.send_flow(flow)
        reduce = handles[-1]
        assert reduce is not None
        job = pq.get_job_by_id(reduce)
        assert job is not None and job.parents_left == items
        procs = [workers.start("--queues", "wf_map,wf_reduce") for _ in range(4)]
        poll_until(lambda: count_state(dsn, schema, "completed") >= 3000, 120, "3,000 maps")
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(30)
        assert reduce.result(timeout=240) == sum(n * n for n in range(items))
        assert count_state(dsn, schema, "completed") == items + 1
        runs = workers.executions()
        assert set(runs) == {h for h in handles if h is not None}  # every job ran
        assert runs[reduce] == 1
    assert workers.stop_all()[1:] == [0, 0, 0], workers.stderr()
