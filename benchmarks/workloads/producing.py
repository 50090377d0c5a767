"""What W1, W2 and W4 share: one producer loop, run the same way for every library.

W1 and W2 time the loop on a fresh database per library and repeat. A producer that can run
the loop in its library's own runtime (:class:`~benchmarks.adapters.NativeLoop`) runs it
there and times it there; every other one runs it here.
"""

from __future__ import annotations

import asyncio
import time

from benchmarks.adapters import NativeLoop, Producer, SendLoop
from benchmarks.adapters.base import Payload
from benchmarks.database import fresh_database
from benchmarks.stats import Summary

from .base import Context, Measurement


async def run_loop(producer: Producer, loop: SendLoop) -> float:
    """Run ``loop`` with ``producer``; seconds from the first call's start to the last one's
    end."""
    if isinstance(producer, NativeLoop):
        return await producer.run_loop(loop)
    size = loop.batch or 1
    calls: list[list[Payload]] = [
        [{"n": i} for i in range(first, min(first + size, loop.jobs))]
        for first in range(0, loop.jobs, size)
    ]
    start = time.perf_counter()
    for k, items in enumerate(calls):
        if loop.gap:
            await asyncio.sleep(max(0.0, start + k * loop.gap - time.perf_counter()))
        if loop.stamp:
            sent_at = time.time()
            for item in items:
                item["t"] = sent_at
        if loop.batch is None:
            await producer.send(items[0])
        else:
            await producer.send_batch(items)
    return time.perf_counter() - start


async def producer_rates(
    ctx: Context, workload: str, case: str, loop: SendLoop
) -> list[Measurement]:
    """jobs/s of ``loop`` for each library, repeated."""
    rates: dict[str, list[float]] = {a.name: [] for a in ctx.adapters}
    for _ in range(ctx.sizes.repeat):
        for adapter in ctx.adapters:
            async with fresh_database(adapter.name) as dsn:
                await adapter.install(dsn)
                async with adapter.producer(dsn) as producer:
                    rate = loop.jobs / await run_loop(producer, loop)
            rates[adapter.name].append(rate)
            ctx.log(f"{workload} {adapter.name}: {rate:,.0f} jobs/s")
    return [
        Measurement(workload, case, name, "defaults", "throughput", "jobs/s", Summary.of(values))
        for name, values in rates.items()
    ]
