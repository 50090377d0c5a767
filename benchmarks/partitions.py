"""The partitioned layout against the default one: a drain's throughput, lookups by id with
10 and 200 queues, and claims on a quiet queue beside a noisy queue's dead tuples.

    python -m benchmarks.partitions [--jobs 20000] [--concurrency 50] [--repeat 3]
                                    [--calls 300] [--dead 100000]

Each measurement runs in a fresh database per layout (``$BENCH_ADMIN_DSN``'s server), the two
layouts alternating, and prints each run and the medians with the partitioned/default ratio.
Latencies are the median of ``--calls`` calls, one at a time. Dead tuples stay only while
nothing vacuums: run on a server with autovacuum off (``SHOW autovacuum`` is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg import sql

from pgqueue import AsyncPgQueue

from .database import fresh_database, vacuum_analyze
from .settings import ADMIN_DSN, QUEUE

LAYOUTS = {"default": False, "partitioned": True}


async def _median_latency(calls: int, call: Callable[[int], Awaitable[object]]) -> float:
    """Median seconds of ``call(i)`` over ``calls`` calls, one at a time."""
    times = []
    for i in range(calls):
        began = time.perf_counter()
        await call(i)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


async def drain(partition: bool, jobs: int, concurrency: int) -> float:
    """Jobs/s of a worker draining one of 10 queues (no-op handler)."""
    async with fresh_database("partitions") as dsn:
        pq = AsyncPgQueue(dsn, maintenance=False, partition=partition)

        @pq.job(QUEUE)
        async def bench(data: Any) -> None:
            return None

        async with pq:
            for i in range(9):
                await pq.create_queue(f"other{i}")
                await pq.insert([{"name": f"other{i}", "data": {}} for _ in range(100)])
            await pq.insert([{"name": QUEUE, "data": {"n": i}} for i in range(jobs)])
            await vacuum_analyze(dsn)
            began = time.perf_counter()
            await pq.work(concurrency=concurrency, until_empty=True, queues=[QUEUE])
            return jobs / (time.perf_counter() - began)


async def by_id(partition: bool, queues: int, calls: int) -> tuple[float, float]:
    """Median seconds of get_job_by_id and of complete(id), with ``queues`` queues of 50
    waiting jobs each."""
    async with (
        fresh_database("partitions") as dsn,
        AsyncPgQueue(dsn, maintenance=False, partition=partition) as pq,
    ):
        ids: list[int] = []
        for i in range(queues):
            await pq.create_queue(f"q{i}")
            ids += await pq.insert([{"name": f"q{i}", "data": {}} for _ in range(50)])
        await vacuum_analyze(dsn)
        rng = random.Random(1)
        get = await _median_latency(calls, lambda _: pq.get_job_by_id(rng.choice(ids)))
        await pq.insert([{"name": "q0", "data": {}} for _ in range(calls)])
        claimed: list[int] = []
        while len(claimed) < calls:
            claimed += [j.id for j in await pq.fetch("q0", min(100, calls - len(claimed)))]
        done = await _median_latency(len(claimed), lambda i: pq.complete(claimed[i]))
        return get, done


async def quiet_claim(partition: bool, dead: int, calls: int) -> tuple[float, float, int]:
    """Median seconds of a claim on a quiet queue: alone, then beside
    ``dead`` dead tuples of a noisy queue (its jobs sent, finished and deleted); and the dead
    tuples the job table's heaps then hold."""
    async with (
        fresh_database("partitions") as dsn,
        AsyncPgQueue(dsn, maintenance=False, partition=partition) as pq,
    ):
        await pq.create_queue("noisy")
        await pq.create_queue("quiet")

        async def claims() -> float:
            """Median seconds of one claim (a job sent before, completed after)."""
            times = []
            for _ in range(calls):
                await pq.send("quiet", {})
                began = time.perf_counter()
                (job,) = await pq.fetch("quiet")
                times.append(time.perf_counter() - began)
                await pq.complete(job.id)
            return statistics.median(times)

        await vacuum_analyze(dsn)
        alone = await claims()
        for start in range(0, dead, 10_000):
            await pq.insert(
                [{"name": "noisy", "data": {}} for _ in range(min(10_000, dead - start))]
            )
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(
                "UPDATE pgqueue.job SET state = 'completed', completed_at = now() "
                "WHERE name = 'noisy'"
            )
            await conn.execute("DELETE FROM pgqueue.job WHERE name = 'noisy'")
            await conn.execute("SELECT pg_stat_force_next_flush()")
            cur = await conn.execute(
                "SELECT coalesce(sum(n_dead_tup), 0)::bigint FROM pg_stat_user_tables "
                "WHERE schemaname = 'pgqueue' AND relname LIKE 'job%%'"
            )
            row = await cur.fetchone()
        beside = await claims()
        return alone, beside, int(row[0]) if row else 0


def _ratio(rows: dict[str, list[float]]) -> str:
    default, partitioned = (statistics.median(rows[k]) for k in LAYOUTS)
    return f"partitioned/default = {partitioned / default:.2f}"


async def main() -> None:
    """Run each measurement ``--repeat`` times per layout and print the medians."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.partitions", description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--dead", type=int, default=100_000)
    args = parser.parse_args()
    async with await psycopg.AsyncConnection.connect(ADMIN_DSN, autocommit=True) as admin:
        cur = await admin.execute(sql.SQL("SHOW autovacuum"))
        row = await cur.fetchone()
        version = await (await admin.execute("SHOW server_version")).fetchone()
    print(f"PostgreSQL {version[0] if version else '?'}, autovacuum {row[0] if row else '?'}")

    rates: dict[str, list[float]] = {k: [] for k in LAYOUTS}
    for _ in range(args.repeat):
        for layout, partition in LAYOUTS.items():
            rates[layout].append(await drain(partition, args.jobs, args.concurrency))
    for layout in LAYOUTS:
        runs = ", ".join(f"{r:,.0f}" for r in rates[layout])
        print(f"drain {args.jobs} jobs, {layout}: {runs} jobs/s")
    print(f"drain median jobs/s: {_ratio(rates)}")

    for queues in (10, 200):
        gets: dict[str, list[float]] = {k: [] for k in LAYOUTS}
        dones: dict[str, list[float]] = {k: [] for k in LAYOUTS}
        for _ in range(args.repeat):
            for layout, partition in LAYOUTS.items():
                get, done = await by_id(partition, queues, args.calls)
                gets[layout].append(get)
                dones[layout].append(done)
        for layout in LAYOUTS:
            print(
                f"{queues} queues, {layout}: get_job_by_id "
                f"{statistics.median(gets[layout]) * 1e3:.3f} ms, complete(id) "
                f"{statistics.median(dones[layout]) * 1e3:.3f} ms"
            )
        print(f"{queues} queues: get_job_by_id {_ratio(gets)}, complete {_ratio(dones)}")

    alone: dict[str, list[float]] = {k: [] for k in LAYOUTS}
    beside: dict[str, list[float]] = {k: [] for k in LAYOUTS}
    for _ in range(args.repeat):
        for layout, partition in LAYOUTS.items():
            quiet, noisy, dead = await quiet_claim(partition, args.dead, args.calls)
            alone[layout].append(quiet)
            beside[layout].append(noisy)
            print(
                f"quiet queue, {layout}: claim {quiet * 1e3:.3f} ms alone, "
                f"{noisy * 1e3:.3f} ms beside {dead:,} dead tuples"
            )
    for layout in LAYOUTS:
        a, b = statistics.median(alone[layout]), statistics.median(beside[layout])
        print(f"quiet queue, {layout}: median {a * 1e3:.3f} -> {b * 1e3:.3f} ms ({b / a:.2f}x)")
    print(f"quiet queue beside dead tuples: {_ratio(beside)}")


if __name__ == "__main__":
    asyncio.run(main())
