"""Measure how fast worker processes drain a preloaded queue.

A *loaded* database is prepared once: the library's schema, an optional backlog, the jobs
(inserted with the library's batch API), then ``VACUUM ANALYZE`` (a steady-state queue has
planner statistics; a table filled seconds ago has none, and some fetch plans are 10x
slower without them). Every measured drain runs on a file copy of it, so repeats start
from the same state and do not pay for the loading again.

The clock runs from the first handler call of any worker (each worker's handler notes it)
to the moment the runner sees every job recorded finished: interpreter start-up is out,
the last completion write is in. A drain that is on course to take longer than the cap is
cut once ``cut_after`` seconds have passed and rated on the jobs it finished.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import psycopg

from .adapters import Adapter, WorkerSettings
from .database import database_name, fresh_database, vacuum_analyze
from .process import WorkerError, WorkerGroup
from .settings import Limits

READY_TIMEOUT = 60.0
SAMPLE_EVERY = 0.05


@dataclass
class DrainResult:
    """What one drain did; ``rss`` and ``progress`` are (seconds since the first job, value)."""

    jobs: int
    done: int
    seconds: float
    progress: list[tuple[float, int]] = field(default_factory=list)
    rss: list[tuple[float, int]] = field(default_factory=list)

    @property
    def capped(self) -> bool:
        """True when the drain was cut before every job finished."""
        return self.done < self.jobs

    @property
    def rate(self) -> float:
        """Jobs per second."""
        return self.done / self.seconds if self.seconds > 0 else 0.0


async def remaining(conn: psycopg.AsyncConnection[tuple[int]], query: str) -> int:
    """Run an adapter's remaining-jobs query."""
    cur = await conn.execute(query.encode())
    row = await cur.fetchone()
    return int(row[0]) if row else 0


@asynccontextmanager
async def loaded_database(
    adapter: Adapter, jobs: int, backlog: int = 0, finished: bool = False
) -> AsyncIterator[str]:
    """A database to copy: schema, ``backlog`` other jobs, ``jobs`` jobs, analyzed.
    Yields its name."""
    async with fresh_database(f"{adapter.name}_loaded") as dsn:
        await adapter.install(dsn)
        if backlog:
            await adapter.seed_backlog(dsn, backlog, finished)
        await adapter.preload(dsn, jobs)
        await vacuum_analyze(dsn)
        yield database_name(dsn)


async def drain_copy(
    adapter: Adapter,
    loaded: str,
    settings: WorkerSettings,
    jobs: int,
    limits: Limits,
    *,
    processes: int = 1,
    sample_rss: bool = False,
) -> DrainResult:
    """Drain a fresh copy of database ``loaded`` (holding ``jobs`` jobs) with
    ``processes`` worker processes."""
    async with fresh_database(adapter.name, template=loaded) as dsn:
        return await measure(
            adapter, dsn, settings, jobs, limits, processes=processes, sample_rss=sample_rss
        )


async def fresh_drain(
    adapter: Adapter,
    settings: WorkerSettings,
    jobs: int,
    limits: Limits,
    *,
    sample_rss: bool = False,
) -> DrainResult:
    """Load a database for one drain only, and drain it with one worker process."""
    async with loaded_database(adapter, jobs) as loaded:
        return await drain_copy(adapter, loaded, settings, jobs, limits, sample_rss=sample_rss)


async def measure(
    adapter: Adapter,
    dsn: str,
    settings: WorkerSettings,
    jobs: int,
    limits: Limits,
    *,
    processes: int = 1,
    sample_rss: bool = False,
) -> DrainResult:
    """Start the workers on a loaded database and time the drain."""
    async with (
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn,
        WorkerGroup(adapter.worker_command(settings), dsn, processes) as group,
    ):
        rss: list[tuple[float, int]] = []
        sampler = asyncio.create_task(_sample_rss(group, rss)) if sample_rss else None
        try:
            first = await _first_job(group, adapter)
            done, finished_at, progress = await _poll(
                conn, adapter.remaining_query(), jobs, first, limits, group
            )
        finally:
            if sampler is not None:
                sampler.cancel()
        rss = [(t - first, value) for t, value in rss]
        return DrainResult(jobs, done, finished_at - first, progress, rss)


async def _first_job(group: WorkerGroup, adapter: Adapter) -> float:
    deadline = time.monotonic() + READY_TIMEOUT
    while (first := group.first_job_at()) is None:
        group.check_alive()
        if time.monotonic() > deadline:
            raise WorkerError(
                f"{adapter.name}: no job started within {READY_TIMEOUT:g}s:\n"
                + group.workers[0].log_tail()
            )
        await asyncio.sleep(0.01)
    return first


async def _sample_rss(group: WorkerGroup, out: list[tuple[float, int]]) -> None:
    while True:
        out.append((time.time(), group.rss()))
        await asyncio.sleep(SAMPLE_EVERY)


async def _poll(
    conn: psycopg.AsyncConnection[tuple[int]],
    query: str,
    jobs: int,
    first: float,
    limits: Limits,
    group: WorkerGroup,
) -> tuple[int, float, list[tuple[float, int]]]:
    """Poll the remaining count, more often as the end nears.

    Returns the jobs done, when (epoch seconds) the last poll saw that, and the progress.
    """
    progress: list[tuple[float, int]] = []
    while True:
        left = await remaining(conn, query)
        now = time.time()
        elapsed = now - first
        done = jobs - left
        progress.append((elapsed, done))
        if limits.stop(elapsed, done, jobs):
            return done, now, progress
        group.check_alive()
        rate = done / elapsed if done > 0 and elapsed > 0 else 0.0
        eta = left / rate if rate > 0 else 0.25
        await asyncio.sleep(min(max(eta / 3, 0.005), 0.25))


def capped_note(results: list[DrainResult]) -> list[str]:
    """A note for the table when drains were cut."""
    cut = [r for r in results if r.capped]
    if not cut:
        return []
    done = ", ".join(f"{r.done:,} in {r.seconds:.1f} s" for r in cut)
    return [
        f"{len(cut)} of {len(results)} runs cut ({done}, of {cut[0].jobs:,} jobs); "
        "rated on the jobs done"
    ]
