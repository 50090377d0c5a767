"""procrastinate's worker application:
``procrastinate --app benchmarks.apps.procrastinate_app.app worker``."""

from __future__ import annotations

import os

import procrastinate

from benchmarks.apps import probe
from benchmarks.settings import QUEUE


def build(dsn: str) -> procrastinate.App:
    """The app with the benchmark task registered (also used by the producer)."""
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name=QUEUE, queue=QUEUE)
    async def bench(n: int, t: float | None = None) -> None:
        probe.started(t)

    return app


app = build(os.environ.get("BENCH_DSN", ""))
