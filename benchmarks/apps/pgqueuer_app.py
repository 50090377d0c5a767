"""pgqueuer's worker application: ``pgq run benchmarks.apps.pgqueuer_app:create``.

Built as pgqueuer's quick start builds one: one asyncpg connection, an ``AsyncpgDriver``.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg  # type: ignore[import-untyped]
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job

from benchmarks.apps import probe
from benchmarks.settings import QUEUE


@asynccontextmanager
async def create() -> AsyncIterator[PgQueuer]:
    """The factory ``pgq run`` calls."""
    connection = await asyncpg.connect(
        os.environ["BENCH_DSN"], server_settings={"application_name": probe.app_name()}
    )
    pgq = PgQueuer(AsyncpgDriver(connection))

    @pgq.entrypoint(QUEUE)
    async def bench(job: Job) -> None:
        decode = probe.enabled() and job.payload is not None
        probe.started(json.loads(job.payload).get("t") if decode else None)  # type: ignore[arg-type]

    try:
        yield pgq
    finally:
        await connection.close()
