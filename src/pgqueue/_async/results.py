"""Waiting for jobs' results: one LISTEN connection per queue object, shared by every
waiter in the process, with a poll as a backstop (a notification is only a hint)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import psycopg

from .._compat import ABackground, AEvent, aend, aspawn, await_event
from .._core import Core
from .._db import Plan
from ..errors import DatabaseError, JobFailedError, JobNotFoundError, ResultTimeoutError
from ..models import Job, JobState
from .runner import run_async

__all__ = ["AsyncJobHandle", "AsyncResults"]

log = logging.getLogger("pgqueue")
T = TypeVar("T")

# Seconds between the waiter's looks at the jobs it waits for, whatever it was told.
POLL_INTERVAL = 5.0
# Seconds the listening connection waits for notifications between checks that it should
# stop (a blocking thread cannot be cancelled).
_LISTEN_SLICE = 0.5


class AsyncResultSource(Protocol):
    """The part of the queue object a job handle waits with."""

    async def result(self, job: int, *, timeout: float | None = None) -> Any: ...


class AsyncJobHandle(int):
    """A sent job's id (an ``int``, as ``send`` always returned) that can wait for the
    job's result: ``await handle.result(timeout=...)``."""

    _source: AsyncResultSource

    def __new__(cls, id: int, source: AsyncResultSource) -> AsyncJobHandle:
        handle = super().__new__(cls, id)
        handle._source = source
        return handle

    async def result(self, timeout: float | None = None) -> Any:
        """The job's output once it completed (see :meth:`AsyncPgQueue.result`)."""
        return await self._source.result(int(self), timeout=timeout)

    def __reduce__(self) -> tuple[type[int], tuple[int]]:
        return int, (int(self),)  # pickled, copied or sent elsewhere: the id


class AsyncResults:
    """Waits for jobs to end, for one queue object: ``wait`` marks the jobs awaited (their
    ends are then announced on the done channel) and sleeps until a notification or the
    backstop poll says they ended."""

    def __init__(
        self,
        dsn: str,
        core: Core,
        run: Callable[[Plan[Any]], Awaitable[Any]],
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        self._dsn = dsn
        self._core = core
        self._run = run
        self._poll_interval = poll_interval
        self._events: dict[int, set[AEvent]] = {}  # each waiter's, by the job it waits for
        self._listening = AEvent()
        self._tried = AEvent()  # the first connection attempt ended, either way
        self._stopping = AEvent()
        self._background: ABackground | None = None

    async def wait(self, job_id: int, timeout: float | None) -> Job:
        """The job once it ended; raises ResultTimeoutError if it has not within
        ``timeout`` seconds, JobNotFoundError if it is gone."""
        deadline = None if timeout is None else time.monotonic() + timeout
        await self._start()
        event = AEvent()
        self._events.setdefault(job_id, set()).add(event)
        try:
            unended = await self._run(self._core.await_jobs([job_id]))
            while True:
                if job_id not in unended:
                    job: Job | None = (await self._run(self._core.get_jobs([job_id]))).get(job_id)
                    if job is None:
                        raise JobNotFoundError(f"job {job_id} does not exist")
                    if job.state.finished:
                        return job
                    # Sent back to run again (resumed, retried) since: wait for its end.
                    unended = await self._run(self._core.await_jobs([job_id]))
                    continue
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise ResultTimeoutError(f"job {job_id} did not end within {timeout} s")
                listening = self._listening.is_set()
                # Not listening (the connection is down): look every half second.
                slice_ = 3600.0 if listening else 0.5
                if await await_event(event, slice_ if left is None else min(left, slice_)):
                    event.clear()
                    unended = set()
                elif not listening:
                    unended = await self._run(self._core.unended([job_id]))
        finally:
            waiting = self._events.get(job_id)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._events[job_id]

    async def _start(self) -> None:
        if self._background is None:
            self._stopping.clear()
            self._background = aspawn(self._listen, "pgqueue-results")
        await await_event(self._tried, 10.0)

    async def stop(self) -> None:
        """Stop listening. Idempotent."""
        background, self._background = self._background, None
        if background is not None:
            self._stopping.set()
            await aend(background)
        self._listening.clear()

    def _wake(self, ids: list[int]) -> None:
        for job_id in ids:
            for event in list(self._events.get(job_id, ())):
                event.set()

    async def _listen(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
                async with conn:
                    await conn.execute(self._core.sql.listen_done)
                    self._listening.set()
                    self._tried.set()
                    backoff = 0.1
                    polled = 0.0  # (re)connected: look at once, notifications were missed
                    while not self._stopping.is_set():
                        if time.monotonic() - polled >= self._poll_interval:
                            polled = time.monotonic()
                            waited = list(self._events)
                            if waited:
                                unended = await run_async(conn, self._core.unended(waited))
                                self._wake([i for i in waited if i not in unended])
                        async for note in conn.notifies(timeout=_LISTEN_SLICE):
                            if note.payload.isdigit():
                                self._wake([int(note.payload)])
            except (psycopg.Error, DatabaseError) as exc:  # (a plan's errors are translated)
                self._listening.clear()
                self._tried.set()
                if self._stopping.is_set():
                    return
                log.warning("result connection lost (%s); reconnecting in %.1fs", exc, backoff)
                await await_event(self._stopping, backoff)
                backoff = min(backoff * 2, 10.0)


def job_result(job: Job) -> Any:
    """A job's result: its output if it completed, else JobFailedError."""
    if job.state is JobState.completed:
        return job.output
    raise JobFailedError(job.id, job.name, job.state, job.output)
