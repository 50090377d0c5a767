"""W1 enqueue-single: jobs sent one call and one transaction each, payload ``{"n": i}``."""

from __future__ import annotations

from benchmarks.adapters import SendLoop

from .base import Context, Measurement
from .producing import producer_rates

ID = "W1"
TITLE = "enqueue-single"


async def run(ctx: Context) -> list[Measurement]:
    """jobs/s of one producer sending ``w1_jobs`` jobs one by one."""
    count = ctx.sizes.w1_jobs
    return await producer_rates(ctx, ID, f"{count:,} jobs, 1 producer", SendLoop(count))
