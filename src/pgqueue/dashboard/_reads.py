"""Where the dashboard reads: the queue object's own database, or a replica of it.

A replica (a hot standby) takes the pages' reads (counts, job lists, jobs, schedules,
subscriptions) off the primary; every action (retry, cancel, pause, run...) and the reads
an action makes to decide still go to the primary."""

from __future__ import annotations

import asyncio

from .._async.queue import AsyncPgQueue

__all__ = ["Reads"]


class Reads:
    """The queue object the dashboard's reads go through: ``pq`` itself, or, given
    ``read_dsn``, an instance of its own on that database and ``pq``'s schema, opened at
    the first read. It knows no jobs, runs no maintenance and never migrates, so it
    writes nothing."""

    def __init__(self, pq: AsyncPgQueue, read_dsn: str | None) -> None:
        self._replica = (
            None
            if read_dsn is None
            else AsyncPgQueue(
                read_dsn,
                schema=pq.schema,
                migrate=False,
                maintenance=False,
                pool_max_size=4,
                prepare=pq._prepare,  # the replica may sit behind the same kind of pooler
            )
        )
        self._pq = pq
        self._lock: asyncio.Lock | None = None
        self._started = False

    @property
    def separate(self) -> bool:
        """Whether reads go to a database of their own."""
        return self._replica is not None

    async def get(self) -> AsyncPgQueue:
        """The queue object to read through (started)."""
        if self._replica is None:
            return self._pq
        if not self._started:
            self._lock = self._lock or asyncio.Lock()
            async with self._lock:
                if not self._started:
                    await self._replica.start()
                    self._started = True
        return self._replica

    async def close(self) -> None:
        """Close the replica's connections, if they were opened. Idempotent."""
        if self._replica is not None and self._started:
            self._started = False
            await self._replica.stop()
