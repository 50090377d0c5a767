"""W3 drain: preloaded jobs, a no-op async handler, worker processes.

Each library runs with its default settings, then with the best of a small sweep of its
knobs (each setting drains ``w3_sweep_jobs`` once; the fastest wins), then with the best
setting in two processes. Every drain runs on a copy of one loaded database per library.
"""

from __future__ import annotations

from contextlib import AsyncExitStack

from benchmarks.adapters import Adapter, WorkerSettings
from benchmarks.drain import DrainResult, capped_note, drain_copy, loaded_database
from benchmarks.stats import Summary

from .base import Context, Measurement

ID = "W3"
TITLE = "drain"
DEFAULT, BEST, BEST_2 = "default settings", "best settings", "best settings, 2 processes"
CASES: tuple[tuple[str, int, bool], ...] = ((DEFAULT, 1, False), (BEST, 1, True), (BEST_2, 2, True))


async def _sweep(ctx: Context, adapter: Adapter) -> tuple[WorkerSettings, list[Measurement]]:
    sizes = ctx.sizes
    rows: list[Measurement] = []
    best: tuple[float, WorkerSettings] | None = None
    async with loaded_database(adapter, sizes.w3_sweep_jobs) as loaded:
        for settings in (adapter.default, *adapter.sweep):
            result = await drain_copy(
                adapter, loaded, settings, sizes.w3_sweep_jobs, sizes.drain_limits
            )
            ctx.log(f"W3 sweep {adapter.name} {settings.label}: {result.rate:,.0f} jobs/s")
            rows.append(
                Measurement(
                    ID,
                    f"sweep, {sizes.w3_sweep_jobs:,} jobs, once",
                    adapter.name,
                    settings.label,
                    "throughput",
                    "jobs/s",
                    Summary.of([result.rate]),
                    notes=capped_note([result]),
                    key="sweep",
                )
            )
            if best is None or result.rate > best[0]:
                best = (result.rate, settings)
    assert best is not None
    return best[1], rows


async def run(ctx: Context) -> list[Measurement]:
    """Sweep, then repeat default, best, and best in two processes."""
    sizes = ctx.sizes
    rows: list[Measurement] = []
    for adapter in ctx.adapters:
        best, sweep_rows = await _sweep(ctx, adapter)
        ctx.best[adapter.name] = best
        rows.extend(sweep_rows)
    results: dict[tuple[str, str], list[DrainResult]] = {}
    async with AsyncExitStack() as stack:
        loaded = {
            a.name: await stack.enter_async_context(loaded_database(a, sizes.w3_jobs))
            for a in ctx.adapters
        }
        for _ in range(sizes.repeat):
            for adapter in ctx.adapters:
                for case, processes, use_best in CASES:
                    settings = ctx.best_for(adapter) if use_best else adapter.default
                    if case == BEST and settings == adapter.default:
                        continue  # the default won the sweep: same as the default row
                    result = await drain_copy(
                        adapter,
                        loaded[adapter.name],
                        settings,
                        sizes.w3_jobs,
                        sizes.drain_limits,
                        processes=processes,
                    )
                    results.setdefault((case, adapter.name), []).append(result)
                    ctx.log(
                        f"W3 {adapter.name} {case} ({settings.label}): {result.rate:,.0f} jobs/s"
                    )
    for case, _, use_best in CASES:
        for adapter in ctx.adapters:
            settings = ctx.best_for(adapter) if use_best else adapter.default
            found = results.get((case, adapter.name)) or results[(DEFAULT, adapter.name)]
            rows.append(
                Measurement(
                    ID,
                    f"{sizes.w3_jobs:,} jobs, {case}",
                    adapter.name,
                    settings.label,
                    "throughput",
                    "jobs/s",
                    Summary.of([r.rate for r in found]),
                    notes=capped_note(found),
                    key=case,
                )
            )
    return rows
