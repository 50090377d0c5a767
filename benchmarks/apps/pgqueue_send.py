"""W1's producer alone, for profiling: ``python -m benchmarks.apps.pgqueue_send DSN JOBS``."""

from __future__ import annotations

import asyncio
import sys
import time

from benchmarks.settings import QUEUE
from pgqueue import AsyncPgQueue


async def send(dsn: str, jobs: int) -> None:
    """Send ``jobs`` jobs one by one, as W1 does."""
    async with AsyncPgQueue(dsn) as pq:
        start = time.perf_counter()
        for i in range(jobs):
            await pq.send(QUEUE, {"n": i})
        print(f"W1: {jobs / (time.perf_counter() - start):,.0f} jobs/s", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(send(sys.argv[1], int(sys.argv[2])))
