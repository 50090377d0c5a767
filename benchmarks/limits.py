"""The cost of a queue's limits: one worker drains no-op jobs from a queue without limits,
and from the same queue with a concurrency limit and a rate limit too high to bind, so
what differs is the claims taking turns and counting (medians of repeated drains).

    python -m benchmarks.limits [--jobs 20000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from pgqueue import AsyncPgQueue

from .database import fresh_database, vacuum_analyze
from .settings import QUEUE

# Each setup: the queue's options, and how many groups the jobs are spread over.
SETUPS: dict[str, tuple[dict[str, Any], int]] = {
    "no limits": ({}, 0),
    "concurrency=10,000": ({"concurrency": 10_000}, 0),
    "rate_limit=(10,000, 1 s)": ({"rate_limit": (10_000, 1)}, 0),
    "group_concurrency=10,000, 10 groups": ({"group_concurrency": 10_000}, 10),
    "ordered, 1,000 groups": ({"ordered": True}, 1000),
    "group_rate_limit=(10,000, 1 s), 10 groups": ({"group_rate_limit": (10_000, 1)}, 10),
}


async def drain(jobs: int, limits: dict[str, Any], groups: int) -> float:
    """Jobs per second of one drain of ``jobs`` no-op jobs under ``limits``, spread over
    ``groups`` groups (none if 0)."""
    async with fresh_database("limits") as dsn:
        pq = AsyncPgQueue(dsn, maintenance=False)

        @pq.job(QUEUE)
        async def bench(data: Any) -> None:
            return None

        async with pq:
            await pq.create_queue(QUEUE)
            if limits:
                await pq.update_queue(QUEUE, **limits)
            await pq.insert(
                [
                    {
                        "name": QUEUE,
                        "data": {"n": i},
                        **({"group": f"g{i % groups}"} if groups else {}),
                    }
                    for i in range(jobs)
                ]
            )
            await vacuum_analyze(dsn)
            began = time.perf_counter()
            await pq.work(until_empty=True)
            return jobs / (time.perf_counter() - began)


async def main() -> None:
    """Drain under each setup, interleaved, and print the medians and ratios."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.limits", description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {name: [] for name in SETUPS}
    for _ in range(args.repeat):
        for name, (limits, groups) in SETUPS.items():
            rates[name].append(await drain(args.jobs, limits, groups))
    base = statistics.median(rates["no limits"])
    for name, values in rates.items():
        median = statistics.median(values)
        print(
            f"{name:44} {median:9,.0f} jobs/s  {median / base:5.2f}x  "
            f"({1e6 / median - 1e6 / base:+.0f} us per job)"
        )


if __name__ == "__main__":
    asyncio.run(main())
