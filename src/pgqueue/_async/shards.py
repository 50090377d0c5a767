"""Several queue installations (databases, or schemas of one), each queue served by one
of them: a router for producers, and a name for each worker process to serve.

It routes, nothing more: each shard is an independent pgqueue with its own job ids,
transactions, LISTEN/NOTIFY and maintenance. Nothing spans two shards at once (no
transaction, dependency, flow or singleton across them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from types import TracebackType
from typing import Any

from ..errors import InvalidInputError, InvalidOptionError
from ..models import Job
from .function import AsyncJobDecorator
from .queue import AsyncPgQueue
from .results import AsyncJobHandle

__all__ = ["AsyncShards", "route"]

_GLOB = frozenset("*?[")


def route(queue: str, routes: Mapping[str, str], default: str | None) -> str | None:
    """The shard of ``queue``: its exact name in ``routes``, else the first glob pattern
    (``*``, ``?``, ``[...]``, in the mapping's order) that matches it, else ``default``."""
    if queue in routes:
        return routes[queue]
    for pattern, shard in routes.items():
        if _GLOB.intersection(pattern) and fnmatchcase(queue, pattern):
            return shard
    return default


class AsyncShards:
    """Queue objects by shard name, and the rule that says which one serves each queue,
    for asyncio code.

    ``routes`` maps queue names or glob patterns (``"report.*"``) to shard names; a name
    given exactly wins over patterns, patterns are tried in order, and a queue matched
    by none goes to ``default`` (None: it is refused). A worker process serves one shard:
    ``await shards["b"].work()``.

    Example:
        ```python
        shards = AsyncShards(
            {"a": AsyncPgQueue("postgresql://db-a/app"), "b": AsyncPgQueue("postgresql://db-b/app")},
            {"report.*": "b"},
            default="a",
        )
        async with shards:
            await shards.send("report.daily", {"day": "2026-11-30"})  # to db-b
        ```
    """

    def __init__(
        self,
        shards: Mapping[str, AsyncPgQueue],
        routes: Mapping[str, str] | None = None,
        *,
        default: str | None = None,
    ) -> None:
        if not isinstance(shards, Mapping) or not shards:
            raise InvalidOptionError(
                "shards: give a mapping of at least one shard name to its queue object"
            )
        for name, queue in shards.items():
            if not isinstance(queue, AsyncPgQueue):
                raise InvalidOptionError(
                    f"shard {name!r} must be an AsyncPgQueue, got {type(queue).__name__}"
                )
        self._shards = dict(shards)
        self._routes = dict(routes or {})
        for pattern, shard in [*self._routes.items(), ("default", default)]:
            if shard is not None and shard not in self._shards:
                raise InvalidOptionError(f"{pattern!r} routes to unknown shard {shard!r}")
        self.default = default

    @property
    def names(self) -> list[str]:
        """The shards' names."""
        return list(self._shards)

    def __getitem__(self, shard: str) -> AsyncPgQueue:
        """The queue object of shard ``shard`` (the one a worker process serves)."""
        try:
            return self._shards[shard]
        except KeyError:
            raise InvalidInputError(f"no shard {shard!r}") from None

    def shard_for(self, queue: str) -> str:
        """The name of the shard that serves ``queue``; InvalidInputError if none does."""
        if not isinstance(queue, str):
            raise InvalidInputError(f"a queue name is a string, got {type(queue).__name__}")
        shard = route(queue, self._routes, self.default)
        if shard is None:
            raise InvalidInputError(f"no shard serves queue {queue!r} and there is no default")
        return shard

    def queue_for(self, queue: str) -> AsyncPgQueue:
        """The queue object of the shard that serves ``queue``."""
        return self._shards[self.shard_for(queue)]

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> AsyncShards:
        """Start every shard's queue object (all, or none: started ones stop on an error)."""
        started: list[AsyncPgQueue] = []
        try:
            for queue in self._shards.values():
                await queue.start()
                started.append(queue)
        except BaseException:
            for queue in reversed(started):
                await queue.stop()
            raise
        return self

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop every shard's queue object. Idempotent."""
        for queue in self._shards.values():
            await queue.stop(timeout)

    async def __aenter__(self) -> AsyncShards:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- routing -----------------------------------------------------------------------------

    def job(self, name: str, **options: Any) -> AsyncJobDecorator:
        """Register the decorated function as the handler of queue ``name`` on the shard
        that serves it (the options of :meth:`AsyncPgQueue.job`)."""
        return self.queue_for(name).job(name, **options)

    async def create_queue(self, name: str, **options: Any) -> bool:
        """Create queue ``name`` on the shard that serves it (:meth:`AsyncPgQueue.create_queue`)."""
        return await self.queue_for(name).create_queue(name, **options)

    async def send(self, name: str, data: Any = None, **options: Any) -> AsyncJobHandle | None:
        """Send a job to the shard that serves queue ``name`` (:meth:`AsyncPgQueue.send`)."""
        return await self.queue_for(name).send(name, data, **options)

    async def insert(self, jobs: Iterable[Mapping[str, Any]]) -> list[tuple[str, int | None]]:
        """Send many jobs (as :meth:`AsyncPgQueue.insert`), one statement per shard; each
        job's (shard, id) in the order given. Every job is checked before any is sent,
        but the shards' inserts are separate transactions: if one fails, the shards
        before it keep their jobs."""
        batches: dict[str, list[tuple[int, Mapping[str, Any]]]] = {}
        for i, job in enumerate(jobs):
            if not isinstance(job, Mapping) or not isinstance(job.get("name"), str):
                raise InvalidInputError(f"job #{i} must be a mapping with a 'name'")
            shard = self.shard_for(job["name"])
            options = {k: v for k, v in job.items() if k not in ("name", "data")}
            # Checked as the shard's insert will check it, so bad input writes nothing.
            self._shards[shard]._core.job_record(
                job["name"], job.get("data"), options, traced=False
            )
            batches.setdefault(shard, []).append((i, job))
        found: dict[int, tuple[str, int | None]] = {}
        for shard, batch in batches.items():
            ids = await self._shards[shard].insert(job for _, job in batch)
            found.update((i, (shard, job_id)) for (i, _), job_id in zip(batch, ids, strict=True))
        return [found[i] for i in range(len(found))]

    async def get_job(self, queue: str, id: int) -> Job | None:
        """Job ``id`` of queue ``queue`` (ids are a shard's own: two shards may each have a
        job 7), from the shard that serves the queue; None if there is none, or if job
        ``id`` of that shard belongs to another queue."""
        job = await self.queue_for(queue).get_job_by_id(id)
        return job if job is not None and job.name == queue else None
