"""W4 latency: an idle worker; jobs sent a fixed gap apart; enqueue to handler start.

The producer stamps each job with the time just before its send call; the handler notes
``now - t`` first thing. Both run on this machine, so one clock serves. The worker runs with
the library's latency settings (its defaults, or what its documentation asks for to start a
job without waiting out a poll interval: see ``Adapter.latency_settings``).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from benchmarks.adapters import Adapter, SendLoop
from benchmarks.database import fresh_database
from benchmarks.process import LOG_DIR, WorkerError, WorkerGroup
from benchmarks.ready import wait_ready
from benchmarks.stats import Summary, percentile

from .base import Context, Measurement
from .producing import run_loop

ID = "W4"
TITLE = "latency"
QUANTILES = (50, 95, 99)
SETTLE = 1.0  # seconds the worker idles before the first job


async def _once(ctx: Context, adapter: Adapter, path: Path) -> tuple[str, list[float]]:
    """One run: the worker's settings label, and the latencies in ms."""
    count, gap = ctx.sizes.w4_jobs, ctx.sizes.w4_gap
    _reset(path)
    env = {"BENCH_LATENCY_FILE": str(path)}
    async with fresh_database(adapter.name) as dsn:
        await adapter.install(dsn)
        settings = await adapter.latency_settings(dsn)
        async with (
            adapter.producer(dsn) as producer,
            WorkerGroup(adapter.worker_command(settings), dsn, 1, env) as group,
        ):
            await wait_ready(adapter, dsn, group, producer)
            await asyncio.sleep(SETTLE)
            await run_loop(producer, SendLoop(count, gap=gap, stamp=True))
            deadline = time.monotonic() + 30
            while len(_read(path)) < count:
                group.check_alive()
                if time.monotonic() > deadline:
                    raise WorkerError(
                        f"{adapter.name}: {len(_read(path))} of {count} jobs started within 30 s"
                    )
                await asyncio.sleep(0.05)
    return settings.label, [1000 * v for v in _read(path)]


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
    labels = {a.name: a.default.label for a in ctx.adapters}
    for _ in range(ctx.sizes.repeat):
        for adapter in ctx.adapters:
            label, latencies = await _once(ctx, adapter, LOG_DIR / f"latency-{adapter.name}.txt")
            labels[adapter.name] = label
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
            labels[adapter.name],
            f"p{q}",
            "ms",
            Summary.of(per_run[adapter.name][q]),
            higher_is_better=False,
            key=f"p{q}",
        )
        for q in QUANTILES
        for adapter in ctx.adapters
    ]
