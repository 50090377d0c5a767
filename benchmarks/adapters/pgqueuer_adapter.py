"""pgqueuer: ``Queries.enqueue`` on an asyncpg connection, ``pgq run`` processes."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg  # type: ignore[import-untyped]
from pgqueuer.db import AsyncpgDriver
from pgqueuer.queries import Queries

from benchmarks.settings import OTHER_QUEUE, QUEUE

from .base import Adapter, Payload, Producer, WorkerSettings

# pgqueuer deletes a job from its queue table when it finishes and logs it in pgqueuer_log;
# a finished backlog is therefore a million (already aggregated) log rows.
_SEED_WAITING = """
INSERT INTO pgqueuer (priority, status, entrypoint, payload)
SELECT 0, 'queued', $1, convert_to(json_build_object('n', g)::text, 'UTF8')
FROM generate_series(1, $2::int) AS g
"""
_SEED_FINISHED = """
INSERT INTO pgqueuer_log (job_id, status, priority, entrypoint, aggregated)
SELECT g, 'successful', 0, $1, true FROM generate_series(1, $2::int) AS g
"""


def _encode(data: Payload) -> bytes:
    return json.dumps(data).encode()


class _Producer:
    def __init__(self, queries: Queries) -> None:
        self._queries = queries

    async def send(self, data: Payload) -> None:
        await self._queries.enqueue(QUEUE, _encode(data))

    async def send_batch(self, items: list[Payload]) -> None:
        await self._queries.enqueue(
            [QUEUE] * len(items), [_encode(d) for d in items], [0] * len(items)
        )


@asynccontextmanager
async def _queries(dsn: str) -> AsyncIterator[Queries]:
    connection = await asyncpg.connect(dsn)
    try:
        yield Queries(AsyncpgDriver(connection))
    finally:
        await connection.close()


class PgqueuerAdapter(Adapter):
    """pgqueuer on asyncpg (its quick start's driver), durable tables."""

    name = "pgqueuer"
    distribution = "pgqueuer"
    default = WorkerSettings("batch_size=10", {"batch_size": 10})
    sweep = (
        WorkerSettings("batch_size=100", {"batch_size": 100}),
        WorkerSettings("batch_size=500", {"batch_size": 500}),
    )

    async def install(self, dsn: str) -> None:
        async with _queries(dsn) as queries:
            await queries.install()

    @asynccontextmanager
    async def producer(self, dsn: str) -> AsyncIterator[Producer]:
        async with _queries(dsn) as queries:
            yield _Producer(queries)

    async def preload(self, dsn: str, count: int) -> None:
        async with _queries(dsn) as queries:
            await _Producer(queries).send_batch([{"n": i} for i in range(count)])

    async def seed_backlog(self, dsn: str, count: int, finished: bool) -> None:
        connection = await asyncpg.connect(dsn)
        try:
            await connection.execute(
                _SEED_FINISHED if finished else _SEED_WAITING, OTHER_QUEUE, count
            )
        finally:
            await connection.close()

    def remaining_query(self) -> str:
        # Queued jobs through the (entrypoint, priority, id) index, picked ones through the
        # heartbeat index; finished jobs leave the table.
        return (
            f"SELECT (SELECT count(*) FROM pgqueuer WHERE entrypoint = '{QUEUE}' "
            "AND status = 'queued') + (SELECT count(*) FROM pgqueuer "
            f"WHERE status = 'picked' AND entrypoint = '{QUEUE}')"
        )

    def worker_command(self, settings: WorkerSettings) -> list[str]:
        # What `pgq run benchmarks.apps.pgqueuer_app:create` runs (see pgqueuer_worker).
        return [
            sys.executable,
            "-m",
            "benchmarks.apps.pgqueuer_worker",
            "--batch-size",
            str(settings.options["batch_size"]),
        ]
