"""procrastinate: ``defer_async`` / ``batch_defer_async``, ``procrastinate worker`` processes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import procrastinate
import psycopg

from benchmarks.apps.procrastinate_app import build
from benchmarks.settings import OTHER_QUEUE, QUEUE

from .base import Adapter, Payload, Producer, WorkerSettings, script

# Finished jobs stay in procrastinate_jobs with status 'succeeded'. Seeding runs with
# session_replication_role = replica so the per-row triggers (an events row and a NOTIFY
# per waiting job) do not make a million-row seed take a minute: the hot path never reads
# the events of other jobs, it only appends its own.
_SEED = """
INSERT INTO procrastinate_jobs (queue_name, task_name, args, status)
SELECT %(queue)s, %(queue)s, jsonb_build_object('n', g),
       %(status)s::procrastinate_job_status
FROM generate_series(1, %(count)s) AS g
"""


class _Producer:
    def __init__(self, app: procrastinate.App) -> None:
        self._task: Any = app.tasks[QUEUE]

    async def send(self, data: Payload) -> None:
        await self._task.defer_async(**data)

    async def send_batch(self, items: list[Payload]) -> None:
        await self._task.batch_defer_async(*items)


class ProcrastinateAdapter(Adapter):
    """procrastinate on psycopg (its PsycopgConnector), worker defaults except the queue."""

    name = "procrastinate"
    distribution = "procrastinate"
    default = WorkerSettings("concurrency=1", {"concurrency": 1})
    sweep = (
        WorkerSettings("concurrency=10", {"concurrency": 10}),
        WorkerSettings("concurrency=50", {"concurrency": 50}),
    )

    async def install(self, dsn: str) -> None:
        async with build(dsn).open_async() as app:
            await app.schema_manager.apply_schema_async()

    @asynccontextmanager
    async def producer(self, dsn: str) -> AsyncIterator[Producer]:
        async with build(dsn).open_async() as app:
            yield _Producer(app)

    async def preload(self, dsn: str, count: int) -> None:
        async with build(dsn).open_async() as app:
            await _Producer(app).send_batch([{"n": i} for i in range(count)])

    async def seed_backlog(self, dsn: str, count: int, finished: bool) -> None:
        params = {
            "queue": OTHER_QUEUE,
            "count": count,
            "status": "succeeded" if finished else "todo",
        }
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute(_SEED, params)

    def remaining_query(self) -> str:
        return (
            f"SELECT count(*) FROM procrastinate_jobs WHERE queue_name = '{QUEUE}' "
            "AND status IN ('todo', 'doing')"
        )

    def worker_command(self, settings: WorkerSettings) -> list[str]:
        return [
            script("procrastinate"),
            "--app",
            "benchmarks.apps.procrastinate_app.app",
            "--log-level",
            "warning",
            "worker",
            "--queues",
            QUEUE,
            "--concurrency",
            str(settings.options["concurrency"]),
        ]
