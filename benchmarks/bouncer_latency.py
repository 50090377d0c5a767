"""Job latency straight to PostgreSQL against through PgBouncer in transaction mode.

    python -m benchmarks.bouncer_latency [--jobs 200] [--repeat 5]

Latency is from the call to ``send`` to the handler's start, one job at a time, in one
process (its worker running beside the sender). Two set-ups, round-robin: everything
straight to PostgreSQL; and the queue object's pool through PgBouncer in transaction mode
(``prepare=False``) with its listener straight to PostgreSQL (``listen_dsn``). Prints the
median latency of each run and the median of those medians, in milliseconds. Needs the
``pgbouncer`` binary (Debian: apt-get install pgbouncer).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

from tests.integration.pgbouncer import pgbouncer_version, running_pgbouncer

from pgqueue import AsyncPgQueue

from .database import fresh_database

_QUEUE = "latency"


async def _median_latency(pq: AsyncPgQueue, jobs: int) -> float:
    """Send ``jobs`` jobs one after another; the median seconds from send to handler start."""
    started: asyncio.Queue[float] = asyncio.Queue()

    @pq.job(_QUEUE)
    async def handler(data: Any) -> None:
        started.put_nowait(time.perf_counter())

    latencies = []
    async with pq:
        worker = asyncio.create_task(pq.work(poll_interval=2.0))
        try:
            for i in range(jobs + 5):  # the first few warm the pool and the listener
                sent = time.perf_counter()
                await pq.send(_QUEUE, i)
                began = await asyncio.wait_for(started.get(), 30)
                if i >= 5:
                    latencies.append(began - sent)
        finally:
            pq.stop_working()
            await worker
    return statistics.median(latencies)


async def main() -> None:
    """Measure and print the medians."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bouncer_latency", description=__doc__
    )
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    medians: dict[str, list[float]] = {"direct": [], "pgbouncer": []}
    async with fresh_database("bouncer_latency") as dsn:
        with running_pgbouncer(dsn, "transaction", pool_size=10) as bounced:
            for run in range(args.repeat):
                for label in medians:
                    options: dict[str, Any] = {"maintenance": False, "schema": f"l{run}{label}"}
                    if label == "pgbouncer":
                        pq = AsyncPgQueue(bounced, prepare=False, listen_dsn=dsn, **options)
                    else:
                        pq = AsyncPgQueue(dsn, **options)
                    medians[label].append(await _median_latency(pq, args.jobs) * 1000)
    summary = {label: statistics.median(values) for label, values in medians.items()}
    print(
        json.dumps(
            {
                "pgbouncer": pgbouncer_version(),
                "jobs": args.jobs,
                "runs_ms": {k: [round(v, 3) for v in vs] for k, vs in medians.items()},
                "median_ms": {k: round(v, 3) for k, v in summary.items()},
                "ratio": round(summary["pgbouncer"] / summary["direct"], 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
