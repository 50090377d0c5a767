"""pgqueue's worker application: ``pgqueue worker benchmarks.apps.pgqueue_app:pq``."""

from __future__ import annotations

import os
from typing import Any

from benchmarks.apps import probe
from benchmarks.settings import QUEUE
from pgqueue import AsyncPgQueue


def build(dsn: str | None) -> AsyncPgQueue:
    """The queue object with the benchmark handler registered."""
    pq = AsyncPgQueue(dsn)

    @pq.job(QUEUE)
    async def bench(data: dict[str, Any]) -> None:
        probe.started(data.get("t"))

    return pq


pq = build(os.environ.get("BENCH_DSN"))
