"""What one send costs against what a Python client can do at all: single-row inserts, one per
transaction, from one asyncio task.

    python -m benchmarks.send_floor [--jobs 5000] [--repeat 3]

Four ways, round-robin, medians in jobs/s: a bare prepared ``INSERT`` on one psycopg
connection; the same through psycopg-pool; pgqueue's insert statement on one connection; and
``AsyncPgQueue.send``. The gaps are the pool, and pgqueue's own statement and Python path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable

import psycopg
from psycopg_pool import AsyncConnectionPool

from pgqueue import AsyncPgQueue
from pgqueue._core import _SINGLE_PARAMS

from .database import fresh_database
from .settings import QUEUE

_BARE = "INSERT INTO pgqueue.job (name, data, keep_until) VALUES (%s, %s::jsonb, now())"


async def _rate(jobs: int, one: Callable[[int], Awaitable[object]]) -> float:
    began = time.perf_counter()
    for i in range(jobs):
        await one(i)
    return jobs / (time.perf_counter() - began)


async def main() -> None:
    """Measure and print the medians."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.send_floor", description=__doc__)
    parser.add_argument("--jobs", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {}
    async with fresh_database("send_floor") as dsn, AsyncPgQueue(dsn, maintenance=False) as pq:
        await pq.create_queue(QUEUE)
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        pool = AsyncConnectionPool(
            dsn, min_size=1, max_size=10, open=False, kwargs={"autocommit": True}
        )
        await pool.open(wait=True)
        statement = pq.sql.job_insert

        async def bare(i: int) -> object:
            return await conn.execute(_BARE, (QUEUE, json.dumps({"n": i})), prepare=True)

        async def pooled(i: int) -> object:
            async with pool.connection() as pooled_conn:
                return await pooled_conn.execute(_BARE, (QUEUE, json.dumps({"n": i})), prepare=True)

        async def statement_only(i: int) -> object:
            params = dict.fromkeys(_SINGLE_PARAMS)
            params.update(name=QUEUE, data=json.dumps({"n": i}))
            return await conn.execute(statement, params, prepare=True)

        async def send(i: int) -> object:
            return await pq.send(QUEUE, {"n": i})

        ways = {
            "bare INSERT, one connection": bare,
            "bare INSERT, psycopg-pool": pooled,
            "pgqueue's insert statement, one connection": statement_only,
            "AsyncPgQueue.send": send,
        }
        try:
            for _ in range(args.repeat):
                for label, one in ways.items():
                    rates.setdefault(label, []).append(await _rate(args.jobs, one))
        finally:
            await pool.close()
            await conn.close()
    for label, found in rates.items():
        print(f"{statistics.median(found):>8,.0f} jobs/s  {label}")


if __name__ == "__main__":
    asyncio.run(main())
