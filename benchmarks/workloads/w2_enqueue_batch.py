"""W2 enqueue-batch: jobs sent in batches with each library's batch API."""

from __future__ import annotations

from benchmarks.adapters import SendLoop

from .base import Context, Measurement
from .producing import producer_rates

ID = "W2"
TITLE = "enqueue-batch"


async def run(ctx: Context) -> list[Measurement]:
    """jobs/s of one producer sending ``w2_jobs`` jobs, ``w2_batch`` per call."""
    count, size = ctx.sizes.w2_jobs, ctx.sizes.w2_batch
    loop = SendLoop(count, batch=size)
    return await producer_rates(ctx, ID, f"{count:,} jobs in batches of {size:,}", loop)
