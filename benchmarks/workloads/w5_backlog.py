"""W5 backlog: drain with a million other jobs in the tables, as a ratio to W3.

Two backlogs, each in a loaded database of its own: jobs waiting in another queue, and
jobs finished but not yet cleaned up (in the shape each library leaves them). Each library
drains with the setting W3's sweep found best. The same drain without a backlog runs too,
so the table can also show the backlog's effect at equal size (W3 drains 2.5x more jobs,
which amortises start-up and the last batches better).
"""

from __future__ import annotations

from benchmarks.drain import DrainResult, capped_note, drain_copy, loaded_database
from benchmarks.stats import Summary

from .base import Context, Measurement

ID = "W5"
TITLE = "backlog"
# (key, label, backlog rows, finished)
BACKLOGS = (
    ("none", "no backlog", False),
    ("waiting", "waiting in another queue", False),
    ("finished", "finished, not cleaned up", True),
)


async def run(ctx: Context) -> list[Measurement]:
    """jobs/s without a backlog and with each backlog."""
    sizes = ctx.sizes
    rows: list[Measurement] = []
    for key, label, finished in BACKLOGS:
        backlog = 0 if key == "none" else sizes.w5_backlog
        results: dict[str, list[DrainResult]] = {a.name: [] for a in ctx.adapters}
        for adapter in ctx.adapters:
            settings = ctx.best_for(adapter)
            async with loaded_database(adapter, sizes.w5_jobs, backlog, finished) as loaded:
                for _ in range(sizes.repeat):
                    result = await drain_copy(
                        adapter, loaded, settings, sizes.w5_jobs, sizes.drain_limits
                    )
                    results[adapter.name].append(result)
                    ctx.log(f"W5 {adapter.name} {label}: {result.rate:,.0f} jobs/s")
        case = (
            f"{sizes.w5_jobs:,} jobs, no backlog"
            if not backlog
            else f"{sizes.w5_jobs:,} jobs, {backlog:,} {label}"
        )
        for adapter in ctx.adapters:
            found = results[adapter.name]
            rows.append(
                Measurement(
                    ID,
                    case,
                    adapter.name,
                    ctx.best_for(adapter).label,
                    "throughput",
                    "jobs/s",
                    Summary.of([r.rate for r in found]),
                    notes=capped_note(found),
                    key=key,
                )
            )
    return rows
