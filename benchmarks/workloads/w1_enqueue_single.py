"""W1 enqueue-single: jobs sent one call and one transaction each, payload ``{"n": i}``."""

from __future__ import annotations

import time

from benchmarks.database import fresh_database
from benchmarks.stats import Summary

from .base import Context, Measurement

ID = "W1"
TITLE = "enqueue-single"


async def run(ctx: Context) -> list[Measurement]:
    """jobs/s of one producer sending ``w1_jobs`` jobs one by one."""
    count = ctx.sizes.w1_jobs
    rates: dict[str, list[float]] = {a.name: [] for a in ctx.adapters}
    for _ in range(ctx.sizes.repeat):
        for adapter in ctx.adapters:
            async with fresh_database(adapter.name) as dsn:
                await adapter.install(dsn)
                async with adapter.producer(dsn) as producer:
                    start = time.perf_counter()
                    for i in range(count):
                        await producer.send({"n": i})
                    rate = count / (time.perf_counter() - start)
            rates[adapter.name].append(rate)
            ctx.log(f"W1 {adapter.name}: {rate:,.0f} jobs/s")
    return [
        Measurement(ID, f"{count:,} jobs, 1 producer", name, "defaults", "throughput",
                    "jobs/s", Summary.of(values))
        for name, values in rates.items()
    ]
