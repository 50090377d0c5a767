"""The worker application of the fault suite: ``pgqueue worker tests.faults.app:pq``.

Every run writes ``start <job id> <run id> <pid>`` to a file of its process in
``$PGQUEUE_FAULT_OUT`` before it works, and returns the run that did the work, so the suite
can tell which run's outcome the database kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from pathlib import Path
from typing import Any

from psycopg.conninfo import make_conninfo

from pgqueue import AsyncPgQueue, Job, MaintenanceSettings

pq = AsyncPgQueue(
    make_conninfo(os.environ["PGQUEUE_FAULT_DSN"], application_name="pgqueue-fault-worker"),
    schema=os.environ["PGQUEUE_FAULT_SCHEMA"],
    # The soak archives finished jobs after a minute, so the job table stays its size.
    maintenance=MaintenanceSettings(
        archive_completed_after=float(os.environ.get("PGQUEUE_FAULT_ARCHIVE_AFTER", "3600"))
    ),
)
_log = (Path(os.environ["PGQUEUE_FAULT_OUT"]) / f"{os.getpid()}.log").open("a", buffering=1)
_forever = threading.Event()  # never set: what a stuck handler waits for


def _started(job: Job) -> None:
    _log.write(f"start {job.id} {job.run_id} {os.getpid()}\n")


@pq.job("work")
async def work(data: Any, job: Job) -> dict[str, Any]:
    """A unit of work of a few milliseconds."""
    _started(job)
    await asyncio.sleep((data or {}).get("sleep", 0.002))
    return {"run": job.run_id, "pid": os.getpid()}


@pq.job("sync_work")
def sync_work(data: Any, job: Job) -> dict[str, Any]:
    """The same, as a sync handler on the worker's threads."""
    _started(job)
    _forever.wait((data or {}).get("sleep", 0.002))
    return {"run": job.run_id, "pid": os.getpid()}


@pq.job("hold", retry_delay=0)
async def hold(data: Any, job: Job) -> dict[str, Any]:
    """Runs for ten minutes the first time, returns at once when run again."""
    _started(job)
    if job.attempt == 1:
        await asyncio.sleep(600)
    return {"run": job.run_id, "pid": os.getpid()}


@pq.job("exits", retry_limit=0)
async def exits(data: Any, job: Job) -> None:
    """Raises SystemExit, as a misbehaving library might."""
    _started(job)
    raise SystemExit(3)


@pq.job("stuck", retry_limit=0, expire_in=1)
def stuck(data: Any, job: Job) -> None:
    """A sync handler that never returns."""
    _started(job)
    _forever.wait()


@pq.job("stubborn", retry_limit=0, expire_in=1)
async def stubborn(data: Any, job: Job) -> None:
    """An async handler that ignores its cancellation (for a minute)."""
    _started(job)
    for _ in range(1200):
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.05)
