"""W2 enqueue-batch: jobs sent in batches with each library's batch API."""

from __future__ import annotations

import time

from benchmarks.database import fresh_database
from benchmarks.stats import Summary

from .base import Context, Measurement

ID = "W2"
TITLE = "enqueue-batch"


async def run(ctx: Context) -> list[Measurement]:
    """jobs/s of one producer sending ``w2_jobs`` jobs, ``w2_batch`` per call."""
    count, size = ctx.sizes.w2_jobs, ctx.sizes.w2_batch
    batches = [[{"n": i} for i in range(k, min(k + size, count))] for k in range(0, count, size)]
    rates: dict[str, list[float]] = {a.name: [] for a in ctx.adapters}
    for _ in range(ctx.sizes.repeat):
        for adapter in ctx.adapters:
            async with fresh_database(adapter.name) as dsn:
                await adapter.install(dsn)
                async with adapter.producer(dsn) as producer:
                    start = time.perf_counter()
                    for batch in batches:
                        await producer.send_batch(batch)
                    rate = count / (time.perf_counter() - start)
            rates[adapter.name].append(rate)
            ctx.log(f"W2 {adapter.name}: {rate:,.0f} jobs/s")
    return [
        Measurement(ID, f"{count:,} jobs in batches of {size:,}", name, "defaults",
                    "throughput", "jobs/s", Summary.of(values))
        for name, values in rates.items()
    ]
