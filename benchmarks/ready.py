"""Wait until worker processes are up: connected, and running jobs."""

from __future__ import annotations

import asyncio
import time

import psycopg

from .adapters import Adapter, Producer
from .drain import remaining
from .process import WorkerError, WorkerGroup

READY_TIMEOUT = 60.0


async def wait_ready(adapter: Adapter, dsn: str, group: WorkerGroup, producer: Producer) -> None:
    """Return once every worker holds a connection and warm-up jobs have run."""
    names = [w.app_name for w in group.workers]
    for _ in range(2 * len(names)):
        await producer.send({"n": -1})
    deadline = time.monotonic() + READY_TIMEOUT
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        while True:
            group.check_alive()
            cur = await conn.execute(
                "SELECT count(DISTINCT application_name) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = ANY(%s)",
                (names,),
            )
            row = await cur.fetchone()
            connected = int(row[0]) if row else 0
            if connected == len(names) and await remaining(conn, adapter.remaining_query()) == 0:
                return
            if time.monotonic() > deadline:
                raise WorkerError(
                    f"{adapter.name} workers not ready after {READY_TIMEOUT:g}s:\n"
                    + group.workers[0].log_tail()
                )
            await asyncio.sleep(0.1)
