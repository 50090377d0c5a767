"""How long a queue's jobs wait behind another queue's backlog in the same worker: queue
``first`` (registered first) holds ``--backlog`` no-op jobs; once the worker is through
1,000 of them, 10 jobs are sent to queue ``second``, and the milliseconds until all 10 have
started are measured (medians of ``--repeat`` runs), with how much of the backlog ran
meanwhile.

    python -m benchmarks.fair_queues [--backlog 20000] [--concurrency 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from pgqueue import AsyncPgQueue

from .database import fresh_database, vacuum_analyze


async def wait_ms(backlog: int, concurrency: int) -> tuple[float, int]:
    """Milliseconds from sending 10 jobs to ``second`` until all have started, and the jobs
    of ``first`` that ran meanwhile."""
    async with fresh_database("fair") as dsn:
        pq = AsyncPgQueue(dsn, maintenance=False)
        done = [0]
        started: list[float] = []
        warm, all_started = asyncio.Event(), asyncio.Event()

        @pq.job("first")
        async def first(data: Any) -> None:
            done[0] += 1
            if done[0] >= 1000:
                warm.set()

        @pq.job("second")
        async def second(data: Any) -> None:
            started.append(time.perf_counter())
            if len(started) == 10:
                all_started.set()

        async with pq:
            await pq.create_queue("first")
            await pq.create_queue("second")
            await pq.insert([{"name": "first", "data": {"n": i}} for i in range(backlog)])
            await vacuum_analyze(dsn)
            worker = asyncio.create_task(pq.work(concurrency=concurrency, poll_interval=30))
            await warm.wait()
            before = done[0]
            sent = time.perf_counter()
            await pq.insert([{"name": "second", "data": {"n": i}} for i in range(10)])
            await all_started.wait()
            ran = done[0] - before
            pq.stop_working()
            await worker
            return (max(started) - sent) * 1000, ran


async def main() -> None:
    """Print the median wait and the backlog run meanwhile."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fair_queues", description=__doc__)
    parser.add_argument("--backlog", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    runs = [await wait_ms(args.backlog, args.concurrency) for _ in range(args.repeat)]
    for ms, ran in runs:
        print(f"10 jobs of 'second' all started after {ms:7.1f} ms ({ran} of 'first' ran)")
    print(f"median: {statistics.median(ms for ms, _ in runs):.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
