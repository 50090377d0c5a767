"""W4 latency: an idle worker; jobs sent a fixed gap apart; enqueue to handler start.

The producer stamps each job with the time just before its send call; the handler notes
``now - t`` first thing. Both run on this machine, so one clock serves.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from benchmarks.adapters import Adapter
from benchmarks.database import fresh_database
from benchmarks.process import LOG_DIR, WorkerError, WorkerGroup
from benchmarks.ready import wait_ready
from benchmarks.stats import Summary, percentile

from .base import Context, Measurement

ID = "W4"
TITLE = "latency"
QUANTILES = (50, 95, 99)
SETTLE = 1.0  # seconds the worker idles before the first job


async def _once(ctx: Context, adapter: Adapter, path: Path) -> list[float]:
    """One run: the latencies in ms."""
    count, gap = ctx.sizes.w4_jobs, ctx.sizes.w4_gap
    _reset(path)
    env = {"BENCH_LATENCY_FILE": str(path)}
    async with fresh_database(adapter.name) as dsn:
        await adapter.install(dsn)
        async with (
            adapter.producer(dsn) as producer,
            WorkerGroup(adapter.worker_command(adapter.default), dsn, 1, env) as group,
        ):
            await wait_ready(adapter, dsn, group, producer)
            await asyncio.sleep(SETTLE)
            start = time.perf_counter()
            for i in range(count):
                await asyncio.sleep(max(0.0, start + i * gap - time.perf_counter()))
                await producer.send({"n": i, "t": time.time()})
            deadline = time.monotonic() + 30
            while len(_read(path)) < count:
                group.check_alive()
                if time.monotonic() > deadline:
                    raise WorkerError(
                        f"{adapter.name}: {len(_read(path))} of {count} jobs started within 30 s"
                    )
                await asyncio.sleep(0.05)
    return [1000 * v for v in _read(path)]


def _reset(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)


def _read(path: Path) -> list[float]:
    try:
        return [float(line) for line in path.read_text().split()]
    except (OSError, ValueError):
        return []


async def run(ctx: Context) -> list[Measurement]:
    """p50/p95/p99 per run; the table shows their median over the runs."""
    per_run: dict[str, dict[int, list[float]]] = {
        a.name: {q: [] for q in QUANTILES} for a in ctx.adapters
    }
    for _ in range(ctx.sizes.repeat):
        for adapter in ctx.adapters:
            latencies = await _once(ctx, adapter, LOG_DIR / f"latency-{adapter.name}.txt")
            for q in QUANTILES:
                per_run[adapter.name][q].append(percentile(latencies, q))
            ctx.log(
                f"W4 {adapter.name}: "
                + ", ".join(f"p{q} {per_run[adapter.name][q][-1]:.1f} ms" for q in QUANTILES)
            )
    case = f"{ctx.sizes.w4_jobs} jobs {ctx.sizes.w4_gap * 1000:g} ms apart, idle worker"
    return [
        Measurement(
            ID,
            case,
            adapter.name,
            adapter.default.label,
            f"p{q}",
            "ms",
            Summary.of(per_run[adapter.name][q]),
            higher_is_better=False,
            key=f"p{q}",
        )
        for q in QUANTILES
        for adapter in ctx.adapters
    ]
