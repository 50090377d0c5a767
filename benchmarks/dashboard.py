"""The dashboard at a million jobs: a schema filled with 1,000,000 jobs over nine queues
and every state (finished ones ending over the last day, some with singleton keys and
groups), then each page of the JSON API and two HTML pages requested in turn, ``--repeat``
times, in process (httpx's ASGI transport, so the time is pgqueue's and the app's, not a
network's). Prints the median and the slowest run of each, in milliseconds. The queues'
counts are timed twice: reused (as served, for up to five seconds) and taken at the request.

    python -m benchmarks.dashboard [--jobs 1000000] [--repeat 9]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import httpx
import psycopg
from psycopg import sql
from starlette.applications import Starlette
from starlette.routing import Mount

from pgqueue import AsyncPgQueue
from pgqueue.dashboard import create_app

from .database import fresh_database, vacuum_analyze

QUEUES = 9


async def fill(dsn: str, pq: AsyncPgQueue, jobs: int) -> None:
    """``jobs`` jobs in one statement: a mix of states like a busy table whose archiving is
    behind; every 50th has a singleton key, every 7th a group."""
    for i in range(QUEUES):
        await pq.create_queue(f"q{i}", concurrency=50)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(
            sql.SQL(
                """
                INSERT INTO {0}.job (name, priority, state, keep_until, created_at,
                    started_at, completed_at, start_after, data, singleton_key, group_key,
                    attempt)
                SELECT 'q' || (i %% %(queues)s), i %% 7, s.state, now() + interval '1 day',
                    s.ended - interval '1 minute',
                    CASE WHEN s.state >= 'active' THEN s.ended - interval '30 seconds' END,
                    CASE WHEN s.state > 'active' THEN s.ended END,
                    now() - interval '1 hour',
                    jsonb_build_object('customer', i %% 1000, 'order', i),
                    CASE WHEN i %% 50 = 0 THEN 'key-' || i END,
                    CASE WHEN i %% 7 = 0 THEN 'tenant-' || (i %% 100) END,
                    CASE WHEN s.state >= 'active' THEN 1 ELSE 0 END
                FROM generate_series(1, %(jobs)s) AS i
                CROSS JOIN LATERAL (SELECT
                    (ARRAY['created', 'completed', 'failed', 'completed', 'retry', 'cancelled',
                           'completed', 'completed'])[i %% 8 + 1]::{0}.job_state AS state,
                    now() - make_interval(secs => (i::bigint * 7919) %% 86400) AS ended) AS s
                """
            ).format(sql.Identifier(pq.schema)),
            {"queues": QUEUES, "jobs": jobs},
        )
    await vacuum_analyze(dsn)


def requests(jobs: int) -> dict[str, str]:
    """What is timed: a label and the path requested."""
    deep = jobs * 9 // 10
    return {
        "jobs, first page": "/api/jobs",
        "jobs, a deep page (after)": f"/api/jobs?after={deep}",
        "jobs of a queue, first page": "/api/jobs?queue=q3",
        "jobs of a queue, deep page": f"/api/jobs?queue=q3&after={deep}",
        "jobs by state (failed)": "/api/jobs?state=failed",
        "jobs of a queue by state": "/api/jobs?queue=q3&state=failed",
        "jobs of a queue by key": f"/api/jobs?queue=q0&key=key-{jobs // 2 // 450 * 450}",
        "jobs of a queue by group": "/api/jobs?queue=q2&group=tenant-56",
        "jobs of a queue by data": '/api/jobs?queue=q3&data={"customer": 12}',
        "jobs by data (any queue)": '/api/jobs?data={"customer": 12}',
        "one job": f"/api/jobs/{jobs // 3}",
        "queues (counts, limits, last hour)": "/api/queues",
        "queues page (HTML)": "/",
        "jobs page (HTML)": "/jobs?queue=q3&state=failed",
    }


async def measure(jobs: int, repeat: int) -> dict[str, list[float]]:
    """Milliseconds of each request, ``repeat`` runs each, interleaved."""
    async with (
        fresh_database("dashboard") as dsn,
        AsyncPgQueue(dsn, maintenance=False) as pq,
    ):
        began = time.perf_counter()
        await fill(dsn, pq, jobs)
        print(f"filled {jobs:,} jobs in {time.perf_counter() - began:.0f} s")
        # The dashboard as served (counts reused for 5 s), and one that counts the queues'
        # jobs at every request (what a page costs when its counts are taken).
        app = Starlette(
            routes=[
                Mount("/fresh", create_app(pq, auth=None, allow_anonymous=True, counts_max_age=0)),
                Mount("/", create_app(pq, auth=None, allow_anonymous=True)),
            ]
        )
        paths = requests(jobs)
        times: dict[str, list[float]] = {label: [] for label in paths}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for label, path in paths.items():  # a first pass warms caches and plans
                answer = await client.get(path)
                assert answer.status_code == 200, (label, answer.text)
            for _ in range(repeat):
                for label, path in paths.items():
                    start = time.perf_counter()
                    answer = await client.get(path)
                    times[label].append((time.perf_counter() - start) * 1000)
                    assert answer.status_code == 200, (label, answer.text)
            # Apart, so that no count the served app takes in the background overlaps them.
            times["queues, counted at this request"] = []
            await asyncio.sleep(1)  # the served app's last background count has ended
            for _ in range(repeat):
                start = time.perf_counter()
                answer = await client.get("/fresh/api/queues")
                times["queues, counted at this request"].append(
                    (time.perf_counter() - start) * 1000
                )
                assert answer.status_code == 200, answer.text
        return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args(argv)
    times = asyncio.run(measure(args.jobs, args.repeat))
    print(f"| {args.jobs:,} jobs | median ms | slowest ms |")
    print("|---|---:|---:|")
    for label, runs in times.items():
        row: list[Any] = [label, f"{statistics.median(runs):.1f}", f"{max(runs):.1f}"]
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
