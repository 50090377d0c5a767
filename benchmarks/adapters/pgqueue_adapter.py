"""pgqueue: ``send`` / ``insert`` in-process, ``pgqueue worker`` processes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg

from benchmarks.settings import OTHER_QUEUE, QUEUE
from pgqueue import AsyncPgQueue

from .base import Adapter, Payload, Producer, WorkerSettings, script

# Seeding a million rows through the API would dominate the run; one INSERT ... SELECT
# writes them in the shape pgqueue leaves them (waiting, or completed and not archived).
_SEED = """
INSERT INTO pgqueue.job (name, data, keep_until, state, started_at, completed_at)
SELECT %(queue)s, jsonb_build_object('n', g), now() + interval '14 days',
       %(state)s::pgqueue.job_state,
       CASE WHEN %(finished)s THEN now() END, CASE WHEN %(finished)s THEN now() END
FROM generate_series(1, %(count)s) AS g
"""


class _Producer:
    def __init__(self, pq: AsyncPgQueue) -> None:
        self._pq = pq

    async def send(self, data: Payload) -> None:
        await self._pq.send(QUEUE, data)

    async def send_batch(self, items: list[Payload]) -> None:
        await self._pq.insert([{"name": QUEUE, "data": data} for data in items])


class PgqueueAdapter(Adapter):
    """pgqueue, with its default settings (maintenance on, pool of 1..10)."""

    name = "pgqueue"
    distribution = "pgqueue"
    default = WorkerSettings("defaults (concurrency=100)", {})
    sweep = (
        WorkerSettings("concurrency=50", {"concurrency": 50}),
        WorkerSettings("concurrency=200", {"concurrency": 200}),
        WorkerSettings("concurrency=400", {"concurrency": 400}),
    )

    async def install(self, dsn: str) -> None:
        async with AsyncPgQueue(dsn, maintenance=False) as pq:
            await pq.create_queue(QUEUE)
            await pq.create_queue(OTHER_QUEUE)

    @asynccontextmanager
    async def producer(self, dsn: str) -> AsyncIterator[Producer]:
        async with AsyncPgQueue(dsn) as pq:
            yield _Producer(pq)

    async def preload(self, dsn: str, count: int) -> None:
        async with AsyncPgQueue(dsn, maintenance=False) as pq:
            await pq.insert([{"name": QUEUE, "data": {"n": i}} for i in range(count)])

    async def seed_backlog(self, dsn: str, count: int, finished: bool) -> None:
        params = {
            "queue": OTHER_QUEUE,
            "count": count,
            "finished": finished,
            "state": "completed" if finished else "created",
        }
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(_SEED, params)

    def remaining_query(self) -> str:
        # Waiting jobs through the fetch index, active ones through the active index.
        return (
            f"SELECT (SELECT count(*) FROM pgqueue.job WHERE name = '{QUEUE}' "
            "AND state < 'active') + (SELECT count(*) FROM pgqueue.job "
            f"WHERE state = 'active' AND name = '{QUEUE}')"
        )

    def worker_command(self, settings: WorkerSettings) -> list[str]:
        return [
            script("pgqueue"),
            "--log-level",
            "WARNING",
            "worker",
            "benchmarks.apps.pgqueue_app:pq",
            *(f"--{name}={value}" for name, value in settings.options.items()),
        ]
