"""The application the dashboard's browser test serves and works: run as
``pgqueue worker tests.acceptance.dashboard_app:pq`` and ``pgqueue dashboard ...``."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from pydantic import BaseModel, Field

from pgqueue import AsyncPgQueue, RunningJob

pq = AsyncPgQueue(
    os.environ.get("PGQUEUE_TEST_DSN"), schema=os.environ.get("PGQUEUE_TEST_SCHEMA", "pgqueue")
)


class CountTo(BaseModel):
    to: int = Field(ge=1, le=100)
    pause: float = Field(0.2, ge=0, le=5)


@pq.job("count_to", description="Counts to a number, reporting progress at each step.")
async def count_to(data: CountTo, job: RunningJob) -> dict[str, int]:
    for done in range(1, data.to + 1):
        await asyncio.sleep(data.pause)  # the work being done, slowly enough to watch
        job.progress({"done": done, "of": data.to})
    return {"counted": data.to}


@pq.job("flaky", description="Fails its first attempt, succeeds after.", retry_limit=0)
async def flaky(data: Any, job: RunningJob) -> str:
    if job.attempt == 1:
        raise RuntimeError("the first attempt fails")
    return f"succeeded on attempt {job.attempt}"


@pq.job("report", description="Does nothing, quickly.")
async def report(data: Any) -> None:
    return None
