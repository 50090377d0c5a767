"""A worker application for the acceptance tests, run as ``pgqueue worker tests.acceptance.app:pq``.

Each run of a handler appends ``<job id> <pid> <retry count>`` to a file of its own process in
``$PGQUEUE_TEST_OUT``, so the tests can count executions per job across processes.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from pgqueue import AsyncPgQueue, Job

pq = AsyncPgQueue(os.environ["PGQUEUE_TEST_DSN"], schema=os.environ["PGQUEUE_TEST_SCHEMA"])
_out = Path(os.environ["PGQUEUE_TEST_OUT"]) / f"{os.getpid()}.log"
_log = _out.open("a", buffering=1)


def record(job: Job) -> None:
    _log.write(f"{job.id} {os.getpid()} {job.retry_count}\n")


@pq.job("count")
async def count(data: Any, job: Job) -> None:
    record(job)


@pq.job("count_slowly")
async def count_slowly(data: Any, job: Job) -> None:
    record(job)
    await asyncio.sleep(0.002)


@pq.job("hold", heartbeat_seconds=2, retry_delay=0)
async def hold(data: Any, job: Job) -> str:
    """Runs for ten minutes the first time, returns at once when retried."""
    record(job)
    if job.retry_count == 0:
        await asyncio.sleep(600)
    return "finished"


@pq.job("hold_first_run", retry_delay=0)
async def hold_first_run(data: Any, job: Job) -> str:
    """Runs for ten minutes the first time it starts in any process, returns at once after."""
    earlier = any(
        line.split()[0] == str(job.id)
        for path in _out.parent.glob("*.log")
        for line in path.read_text().splitlines()
    )
    record(job)
    if not earlier:
        await asyncio.sleep(600)
    return "finished"


_spans = (_out.parent / f"{os.getpid()}.spans").open("a", buffering=1)


@pq.job("limited")
async def limited(data: Any, job: Job) -> None:
    """Records when it starts and ends (``start|end <job id> <time>``), runs a few ms."""
    _spans.write(f"start {job.id} {time.time()}\n")
    await asyncio.sleep(0.005)
    _spans.write(f"end {job.id} {time.time()}\n")


@pq.job("tenants")
async def tenants(data: Any, job: Job) -> None:
    """A few ms of work for a group's job."""
    await asyncio.sleep(0.005)


@pq.job("in_order", retry_limit=20, retry_delay=0)
async def in_order(data: Any, job: Job) -> None:
    """Records its start and end; fails about one run in five (the same runs every time)."""
    _spans.write(f"start {job.id} {job.group} {time.time()}\n")
    await asyncio.sleep(0.001)
    _spans.write(f"end {job.id} {job.group} {time.time()}\n")
    if hash((job.id, job.attempt)) % 5 == 0:
        raise RuntimeError("a failure on purpose")


@pq.job("wf_node", heartbeat_seconds=1, retry_delay=0)
async def wf_node(data: dict[str, int], job: Job) -> int:
    """A workflow step: its ``add`` plus the sum of its parents' outputs."""
    record(job)
    parents = await pq.parents(job)
    assert len(parents) == len(job.depends_on or []), "a parent is missing"
    assert all(p.state == "completed" for p in parents), "a parent has not completed"
    outputs: list[int] = [p.output for p in parents]
    return data["add"] + sum(outputs)


@pq.job("wf_map", heartbeat_seconds=1, retry_delay=0)
async def wf_map(data: dict[str, int], job: Job) -> int:
    """One item of a map/reduce: its square."""
    record(job)
    await asyncio.sleep(0.001)
    return data["n"] ** 2


@pq.job("wf_reduce", heartbeat_seconds=1, retry_delay=0)
async def wf_reduce(data: Any, job: Job) -> int:
    """The reduce of a map/reduce: the sum of its parents' outputs."""
    record(job)
    outputs: list[int] = [p.output for p in await pq.parents(job)]
    return sum(outputs)
