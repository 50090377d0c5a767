"""What deferred jobs at the head of a queue cost a claim: the time of one claim of
``--batch`` due jobs (medians of repeated claims, each rolled back so every claim sees the
same queue) from a queue of due jobs alone, and from the same queue behind ``--deferred``
jobs (half sent for later, half retries backing off) of the same priority, and of a higher
priority.

    python -m benchmarks.deferred [--deferred 100000] [--due 1000] [--batch 100]
                                  [--claims 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import psycopg
from psycopg import sql

from pgqueue import AsyncPgQueue
from pgqueue._sql import Statements

from .database import fresh_database, vacuum_analyze

# Each setup: how many deferred jobs come first, and their priority (the due jobs have 0).
SETUPS: dict[str, tuple[bool, int]] = {
    "due jobs alone": (False, 0),
    "behind deferred jobs, same priority": (True, 0),
    "behind deferred jobs, higher priority": (True, 1),
}


async def claim_ms(deferred: int, priority: int, due: int, batch: int, claims: int) -> float:
    """Median milliseconds of a claim of ``batch`` jobs from ``due`` due jobs sent after
    ``deferred`` deferred ones of ``priority``."""
    async with fresh_database("deferred") as dsn:
        async with AsyncPgQueue(dsn, maintenance=False) as pq:
            await pq.create_queue("q")
            schema = pq.schema
        ident = sql.Identifier(schema)
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(
                sql.SQL(
                    """
                    INSERT INTO {0}.job (name, priority, state, keep_until, start_after)
                    SELECT 'q', %(priority)s,
                        (ARRAY['created', 'retry'])[i %% 2 + 1]::{0}.job_state,
                        now() + interval '1 day', now() + interval '1 hour'
                    FROM generate_series(1, %(n)s) AS i
                    """
                ).format(ident),
                {"n": deferred, "priority": priority},
            )
            await conn.execute(
                sql.SQL(
                    """
                    INSERT INTO {0}.job (name, keep_until, start_after)
                    SELECT 'q', now() + interval '1 day', now() - interval '1 minute'
                    FROM generate_series(1, %(n)s)
                    """
                ).format(ident),
                {"n": due},
            )
        await vacuum_analyze(dsn)
        query = Statements(schema).job_fetch
        params = {"name": "q", "limit": batch, "worker_id": "w", "heartbeat": 30.0, "turn": False}
        times = []
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            for _ in range(claims):
                began = time.perf_counter()
                cur = await conn.execute(query, params, prepare=True)
                rows = await cur.fetchall()
                times.append(time.perf_counter() - began)
                await conn.rollback()
                assert len(rows) == min(batch, due), len(rows)
        return statistics.median(times) * 1000


async def main() -> None:
    """Run each setup and print its median claim time and its ratio to due jobs alone."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.deferred", description=__doc__)
    parser.add_argument("--deferred", type=int, default=100_000)
    parser.add_argument("--due", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--claims", type=int, default=200)
    args = parser.parse_args()
    base = 0.0
    for label, (behind, priority) in SETUPS.items():
        ms = await claim_ms(
            args.deferred if behind else 0, priority, args.due, args.batch, args.claims
        )
        base = base or ms
        print(f"{label:40} {ms:7.3f} ms per claim of {args.batch}  ({ms / base:.2f}x)")


if __name__ == "__main__":
    asyncio.run(main())
