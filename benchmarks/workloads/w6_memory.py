"""W6 memory: peak RSS of one worker process draining a large preloaded queue.

psutil samples the worker's RSS every 50 ms. Flat memory means the peak after the first
quarter of the jobs equals the peak at the end; the table shows both and the growth.
One run per library (memory is far less noisy than time).
"""

from __future__ import annotations

from benchmarks.adapters import Adapter
from benchmarks.drain import DrainResult, capped_note, fresh_drain
from benchmarks.stats import Summary

from .base import Context, Measurement

ID = "W6"
TITLE = "memory"
MB = 1024 * 1024


def _peak_until(result: DrainResult, done: int) -> float:
    """Peak RSS (MB) up to the moment ``done`` jobs had been seen finished."""
    when = next((t for t, d in result.progress if d >= done), result.seconds)
    samples = [rss for t, rss in result.rss if t <= when]
    return max(samples, default=0) / MB


def _rows(ctx: Context, adapter: Adapter, result: DrainResult) -> list[Measurement]:
    settings = ctx.best_for(adapter).label
    case = f"{result.jobs:,} jobs preloaded, 1 process"
    quarter = max(result.done // 4, 1)
    early, end = _peak_until(result, quarter), _peak_until(result, result.done)
    notes = capped_note([result]) or [f"{quarter:,} then {result.done:,} jobs"]
    return [
        Measurement(
            ID,
            case,
            adapter.name,
            settings,
            "peak RSS after 1/4 of the jobs",
            "MB",
            Summary.of([early]),
            higher_is_better=False,
            notes=notes,
            key="early",
        ),
        Measurement(
            ID,
            case,
            adapter.name,
            settings,
            "peak RSS after all the jobs",
            "MB",
            Summary.of([end]),
            higher_is_better=False,
            notes=notes,
            key="end",
        ),
        Measurement(
            ID,
            case,
            adapter.name,
            settings,
            "growth over the last 3/4",
            "MB",
            Summary.of([end - early]),
            higher_is_better=False,
            notes=notes,
            key="growth",
        ),
    ]


async def run(ctx: Context) -> list[Measurement]:
    """Peak RSS after a quarter of the jobs, at the end, and the difference."""
    rows: list[Measurement] = []
    for adapter in ctx.adapters:
        result = await fresh_drain(
            adapter, ctx.best_for(adapter), ctx.sizes.w6_jobs, ctx.sizes.w6_limits, sample_rss=True
        )
        ctx.log(
            f"W6 {adapter.name}: {result.done:,} jobs, peak "
            f"{_peak_until(result, result.done):.1f} MB"
        )
        rows.extend(_rows(ctx, adapter, result))
    return rows
