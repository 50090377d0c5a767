"""What W1 and W2 share: time one producer per library, each repeat on a fresh database."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from benchmarks.adapters import Producer
from benchmarks.database import fresh_database
from benchmarks.stats import Summary

from .base import Context, Measurement


async def producer_rates(
    ctx: Context,
    workload: str,
    case: str,
    jobs: int,
    send_all: Callable[[Producer], Awaitable[None]],
) -> list[Measurement]:
    """jobs/s of ``send_all`` (which sends ``jobs`` jobs) for each library, repeated."""
    rates: dict[str, list[float]] = {a.name: [] for a in ctx.adapters}
    for _ in range(ctx.sizes.repeat):
        for adapter in ctx.adapters:
            async with fresh_database(adapter.name) as dsn:
                await adapter.install(dsn)
                async with adapter.producer(dsn) as producer:
                    start = time.perf_counter()
                    await send_all(producer)
                    rate = jobs / (time.perf_counter() - start)
            rates[adapter.name].append(rate)
            ctx.log(f"{workload} {adapter.name}: {rate:,.0f} jobs/s")
    return [
        Measurement(workload, case, name, "defaults", "throughput", "jobs/s", Summary.of(values))
        for name, values in rates.items()
    ]
