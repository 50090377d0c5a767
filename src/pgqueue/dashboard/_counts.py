"""The queues page's counts, kept for a few seconds: counting every job per queue and state
reads the whole job table (0.3-0.4 s at a million jobs), so one count serves every page
and API request for ``max_age`` seconds. An older count is still served, for up to
``STALE_FACTOR`` times as long, while a fresh one is taken in the background; past that
(or after an action that changes counts) the request waits for a fresh one."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from .._async.queue import AsyncPgQueue
from ..models import QueueStats
from ._present import WINDOW_BUCKETS, WINDOW_SECONDS
from ._reads import Reads

__all__ = ["STALE_FACTOR", "Counts", "QueueCounts"]

log = logging.getLogger("pgqueue.dashboard")
STALE_FACTOR = 12


@dataclass(frozen=True)
class Counts:
    """One count of every queue: its stats, its last hour's throughput, when it was taken."""

    stats: list[QueueStats]
    throughput: dict[str, list[tuple[int, int]]]
    taken: float  # time.monotonic() when taken

    @property
    def age(self) -> float:
        """Seconds since it was taken."""
        return time.monotonic() - self.taken


class QueueCounts:
    """The latest count of a queue object's queues (read through ``Reads`` when given: on
    a replica), shared by every request."""

    def __init__(self, pq: AsyncPgQueue | Reads, max_age: float) -> None:
        if not max_age >= 0:
            raise ValueError(f"max_age must be 0 or more seconds, got {max_age!r}")
        self._reads = pq if isinstance(pq, Reads) else Reads(pq, None)
        self.max_age = max_age
        self._latest: Counts | None = None
        self._taking: asyncio.Task[Counts] | None = None
        self._generation = 0  # counts begun before an action are not kept after it

    def forget(self) -> None:
        """Drop the latest count (an action changed it): the next request counts again,
        and a count under way, begun before the action, is not kept."""
        self._latest = None
        self._taking = None
        self._generation += 1

    async def get(self) -> Counts:
        """A count no older than max_age, or one a little older while a new one is taken."""
        latest = self._latest
        if latest is not None and latest.age <= self.max_age:
            return latest
        if latest is not None and latest.age <= self.max_age * STALE_FACTOR:
            self._start()
            return latest
        return await asyncio.shield(self._start())

    def _start(self) -> asyncio.Task[Counts]:
        if self._taking is None or self._taking.done():
            take = self._take(self._generation)
            self._taking = asyncio.get_running_loop().create_task(take)
            self._taking.add_done_callback(_log_failure)
        return self._taking

    async def _take(self, generation: int) -> Counts:
        began = time.monotonic()
        pq = await self._reads.get()
        stats = await pq.get_queue_stats()
        rates = await pq.get_queue_throughput(window=WINDOW_SECONDS, buckets=WINDOW_BUCKETS)
        counts = Counts(stats, rates, began)
        if generation == self._generation:
            self._latest = counts
        return counts


def _log_failure(task: asyncio.Task[Counts]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("counting the queues' jobs failed: %s", task.exception())
