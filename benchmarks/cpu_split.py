"""Split a drain's CPU between PostgreSQL and the worker: CPU microseconds per job on each side.

    python -m benchmarks.cpu_split [--jobs 100000] [--concurrency 200] [--repeat 3]
                                   [--metrics] [--tracing]

The worker runs in this process (``work(until_empty=True)``, no-op async handler); its CPU is
``getrusage``. PostgreSQL's is the sum of user and system time of every ``postgres`` process
in ``/proc`` (Linux only), so the server must run on this machine and nothing else should
use it meanwhile. ``--metrics`` keeps Prometheus metrics (pgqueue.metrics, not scraped) and
``--tracing`` makes the spans of pgqueue.tracing (the OpenTelemetry SDK, spans batched to an
exporter that drops them), to measure what each costs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import time
from pathlib import Path
from typing import Any

from pgqueue import AsyncPgQueue

from .database import fresh_database, vacuum_analyze
from .settings import QUEUE

_TICKS = os.sysconf("SC_CLK_TCK")


def postgres_cpu() -> float:
    """CPU seconds used so far by every process named postgres."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if not (entry / "comm").read_text().startswith("postgres"):
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICKS


def own_cpu() -> float:
    """CPU seconds used so far by this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def observe(pq: AsyncPgQueue, metrics: bool, tracing: bool) -> None:
    """Turn on what is asked of pgqueue.metrics and pgqueue.tracing."""
    if metrics:
        import pgqueue.metrics

        pgqueue.metrics.enable(pq)
    if tracing:
        from collections.abc import Sequence

        from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        import pgqueue.tracing

        class Drop(SpanExporter):
            def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Drop()))
        pgqueue.tracing.instrument(pq, provider)


async def measure(
    jobs: int, concurrency: int, metrics: bool = False, tracing: bool = False
) -> tuple[float, float, float]:
    """One drain: (jobs/s, PostgreSQL CPU us per job, worker CPU us per job)."""
    async with fresh_database("cpu_split") as dsn:
        pq = AsyncPgQueue(dsn, maintenance=False)

        @pq.job(QUEUE)
        async def bench(data: Any) -> None:
            return None

        observe(pq, metrics, tracing)

        async with pq:
            await pq.insert([{"name": QUEUE, "data": {"n": i}} for i in range(jobs)])
            await vacuum_analyze(dsn)
            server, worker, began = postgres_cpu(), own_cpu(), time.perf_counter()
            await pq.work(concurrency=concurrency, until_empty=True)
            elapsed = time.perf_counter() - began
            server, worker = postgres_cpu() - server, own_cpu() - worker
    return jobs / elapsed, server * 1e6 / jobs, worker * 1e6 / jobs


async def main() -> None:
    """Run the drains and print the medians."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cpu_split", description=__doc__)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--metrics", action="store_true", help="keep Prometheus metrics")
    parser.add_argument("--tracing", action="store_true", help="make OpenTelemetry spans")
    args = parser.parse_args()
    runs = [
        await measure(args.jobs, args.concurrency, args.metrics, args.tracing)
        for _ in range(args.repeat)
    ]
    for rate, server, worker in runs:
        print(
            f"{rate:,.0f} jobs/s: PostgreSQL {server:.1f} us, worker {worker:.1f} us of CPU per job"
        )
    rate, server, worker = (statistics.median(column) for column in zip(*runs, strict=True))
    print(
        f"median: {rate:,.0f} jobs/s, PostgreSQL {server:.1f} us + worker {worker:.1f} us "
        f"= {server + worker:.1f} us of CPU per job"
    )


if __name__ == "__main__":
    asyncio.run(main())
