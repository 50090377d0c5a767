"""The cost of jobs that depend on jobs. First, completing parents: ``--jobs`` active jobs
completed in one statement, when nothing depends on them, when each has one waiting child,
and when one job waits for them all (a fan-in). Then a drain by one worker: ``--jobs``
no-op jobs alone, and the same jobs as the parents of four fan-ins that each wait for half
of them. Last, failing a parent whose ``--jobs`` dependents are cancelled with it, as a
fan-out and as a chain (medians of repeated runs, interleaved; ratios to the runs without
dependents).

    python -m benchmarks.workflows [--jobs 5000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from pgqueue import AsyncPgQueue, Flow

from .database import fresh_database, vacuum_analyze

SHAPES = ("no dependents", "one child each", "one fan-in")


def _flow(jobs: int, shape: str) -> Flow:
    flow = Flow()
    parents = [flow.add("parent", {"n": n}) for n in range(jobs)]
    if shape == "one child each":
        for parent in parents:
            flow.add("child", depends_on=[parent])
    elif shape == "one fan-in":
        flow.add("child", depends_on=parents)
    elif shape == "four fan-ins":
        for k in range(4):
            flow.add("child", depends_on=parents[k % 2 :: 2])
    return flow


async def complete(jobs: int, shape: str) -> float:
    """Seconds to complete ``jobs`` claimed parents in one statement."""
    async with fresh_database("workflows") as dsn, AsyncPgQueue(dsn, maintenance=False) as pq:
        await pq.create_queue("parent")
        await pq.create_queue("child")
        await pq.send_flow(_flow(jobs, shape))
        await vacuum_analyze(dsn)
        claimed = await pq.fetch("parent", jobs)
        began = time.perf_counter()
        await pq.complete(claimed)
        return time.perf_counter() - began


async def cancel(jobs: int, shape: str) -> float:
    """Seconds to fail a parent whose ``jobs`` dependents (a fan-out, or a chain) are
    cancelled with it, in one statement."""
    async with fresh_database("workflows") as dsn, AsyncPgQueue(dsn, maintenance=False) as pq:
        await pq.create_queue("parent", retry_limit=0)
        await pq.create_queue("child")
        flow = Flow()
        step = head = flow.add("parent")
        for _ in range(jobs):
            step = flow.add("child", depends_on=[head if shape == "fan-out" else step])
        await pq.send_flow(flow)
        await vacuum_analyze(dsn)
        claimed = await pq.fetch("parent")
        began = time.perf_counter()
        await pq.fail(claimed, "failed on purpose")
        return time.perf_counter() - began


async def drain(jobs: int, shape: str) -> float:
    """Seconds for one worker to run ``jobs`` parents and the children of ``shape``."""
    async with fresh_database("workflows") as dsn:
        pq = AsyncPgQueue(dsn, maintenance=False)

        @pq.job("parent")
        async def parent(data: Any) -> int:
            return 1

        @pq.job("child")
        async def child(data: Any) -> None:
            return None

        async with pq:
            handles = await pq.send_flow(_flow(jobs, shape))
            await vacuum_analyze(dsn)
            began = time.perf_counter()
            worker = asyncio.create_task(pq.work())
            for handle in handles[jobs:] or handles[-1:]:
                if handle is not None:
                    await handle.result(timeout=600)
            elapsed = time.perf_counter() - began
            await pq.stop()
            await worker
            return elapsed


async def main() -> None:
    """Measure each shape, interleaved, and print the medians and ratios."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.workflows", description=__doc__)
    parser.add_argument("--jobs", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    completions: dict[str, list[float]] = {shape: [] for shape in SHAPES}
    drains: dict[str, list[float]] = {shape: [] for shape in ("no dependents", "four fan-ins")}
    cancels: dict[str, list[float]] = {shape: [] for shape in ("fan-out", "chain")}
    for _ in range(args.repeat):
        for shape in SHAPES:
            completions[shape].append(await complete(args.jobs, shape))
        for shape in drains:
            drains[shape].append(await drain(args.jobs, shape))
        for shape in cancels:
            cancels[shape].append(await cancel(args.jobs, shape))
    print(f"completing {args.jobs:,} parents in one statement:")
    base = statistics.median(completions["no dependents"])
    for shape, values in completions.items():
        median = statistics.median(values)
        print(f"  {shape:16} {median * 1e6 / args.jobs:7.1f} us per parent  {median / base:5.2f}x")
    print(f"one worker draining {args.jobs:,} parents:")
    base = statistics.median(drains["no dependents"])
    for shape, values in drains.items():
        median = statistics.median(values)
        print(f"  {shape:16} {args.jobs / median:9,.0f} parents/s  {median / base:5.2f}x the time")
    print(f"failing a parent that {args.jobs:,} waiting jobs depend on:")
    for shape, values in cancels.items():
        median = statistics.median(values)
        print(f"  {shape:16} {median * 1e6 / args.jobs:7.1f} us per job cancelled")


if __name__ == "__main__":
    asyncio.run(main())
