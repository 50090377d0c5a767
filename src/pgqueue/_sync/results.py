# Generated from _async/results.py by scripts/unasync.py: do not edit.
"""Waiting for jobs' results: one LISTEN connection per queue object, shared by every
waiter in the process, with a poll as a backstop (a notification is only a hint)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import psycopg

from .._compat import Background, Event, Lock, end, spawn, wait_event
from .._core import Core
from .._db import Plan
from .._notifier import PROBE_WAIT, deaf_warning, probe_payload
from ..errors import (
    JobFailedError,
    JobNotFoundError,
    PgQueueError,
    ResultTimeoutError,
)
from ..models import Job, JobState
from .runner import connect_options, run_sync

__all__ = ["JobHandle", "Results"]

log = logging.getLogger("pgqueue")
T = TypeVar("T")

# Seconds between the waiter's looks at the jobs it waits for, whatever it was told.
POLL_INTERVAL = 5.0
# Seconds the listening connection waits for notifications between checks that it should
# stop (a blocking thread cannot be cancelled).
_LISTEN_SLICE = 0.5


class ResultSource(Protocol):
    """The part of the queue object a job handle waits with."""

    def result(self, job: int, *, timeout: float | None = None) -> Any: ...


class JobHandle(int):
    """A sent job's id (an ``int``, as ``send`` always returned) that can wait for the
    job's result: ``handle.result(timeout=...)``.

    Example:
        ```python
        handle = pq.send("render", {"page": 1})
        if handle is not None:
            print(int(handle))  # the job's id
            png = handle.result(timeout=30)
        ```
    """

    _source: ResultSource

    def __new__(cls, id: int, source: ResultSource) -> JobHandle:
        handle = super().__new__(cls, id)
        handle._source = source
        return handle

    def result(self, timeout: float | None = None) -> Any:
        """The job's output once it completed (see :meth:`PgQueue.result`)."""
        return self._source.result(int(self), timeout=timeout)

    def __reduce__(self) -> tuple[type[int], tuple[int]]:
        return int, (int(self),)  # pickled, copied or sent elsewhere: the id


class Results:
    """Waits for jobs to end, for one queue object: ``wait`` marks the jobs awaited (their
    ends are then announced on the done channel) and sleeps until a notification or the
    backstop poll says they ended. Where notifications do not arrive (a pooler in
    transaction mode) the backstop poll alone tells them."""

    def __init__(
        self,
        dsn: str | None,
        core: Core,
        run: Callable[[Plan[Any]], Any],
        poll_interval: float = POLL_INTERVAL,
        *,
        prepare: bool = True,
    ) -> None:
        self._dsn = dsn  # None: no listening, each waiter looks every half second
        self._prepare = prepare
        self._core = core
        self._run = run
        self._poll_interval = poll_interval
        self._events: dict[int, set[Event]] = {}  # each waiter's, by the job it waits for
        self._lock = Lock()  # (waiters may be threads)
        self._listening = Event()
        self._tried = Event()  # the first connection attempt ended, either way
        self._stopping = Event()
        self._background: Background | None = None

    def wait(self, job_id: int, timeout: float | None) -> Job:
        """The job once it ended; raises ResultTimeoutError if it has not within
        ``timeout`` seconds, JobNotFoundError if it is gone, PgQueueError if the queue
        object stops meanwhile."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._start()
        wait_event(self._tried, 10.0)
        event = Event()
        with self._lock:
            self._events.setdefault(job_id, set()).add(event)
        try:
            while True:
                # Not ended: marked so that its end is announced, unless its row was locked
                # (then it is looked at again every half second).
                unended = self._look(lambda: self._core.await_jobs([job_id]), deadline)
                if job_id not in unended:
                    jobs = self._look(lambda: self._core.get_jobs([job_id]), deadline)
                    job: Job | None = jobs.get(job_id)
                    if job is None:
                        raise JobNotFoundError(f"job {job_id} does not exist")
                    if job.state.finished:
                        return job
                    continue  # sent back to run again since (resumed, retried)
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise ResultTimeoutError(f"job {job_id} did not end within {timeout} s")
                told = self._listening.is_set() and unended[job_id]
                slice_ = 3600.0 if told else 0.5
                wait_event(event, slice_ if left is None else min(left, slice_))
                event.clear()
                if self._stopping.is_set():
                    raise PgQueueError(f"stopped while waiting for job {job_id}")
        finally:
            with self._lock:
                waiting = self._events.get(job_id)
                if waiting is not None:
                    waiting.discard(event)
                    if not waiting:
                        del self._events[job_id]

    def _look(self, plan: Callable[[], Plan[T]], deadline: float | None) -> T:
        """Run a plan, trying again while the database is out of reach (until the
        deadline: then ResultTimeoutError)."""
        backoff = 0.1
        while True:
            try:
                result: T = self._run(plan())
                return result
            except PgQueueError as exc:
                if not exc.transient:
                    raise
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise ResultTimeoutError(f"the database was out of reach: {exc}") from exc
                if self._stopping.is_set():
                    raise PgQueueError(f"stopped while waiting: {exc}") from exc
                wait_event(self._stopping, backoff if left is None else min(left, backoff))
                backoff = min(backoff * 2, 5.0)

    def _start(self) -> None:
        with self._lock:
            if self._dsn is None:
                self._tried.set()
            elif self._background is None:
                self._stopping.clear()
                self._background = spawn(self._listen, "pgqueue-results")

    def stop(self) -> None:
        """Stop listening, and wake every waiter (each raises PgQueueError). Idempotent."""
        with self._lock:
            background, self._background = self._background, None
            self._stopping.set()
            waiting = [e for events in self._events.values() for e in events]
        for event in waiting:
            event.set()
        if background is not None:
            end(background)
        self._listening.clear()

    def _wake(self, ids: list[int]) -> None:
        with self._lock:
            woken = [e for job_id in ids for e in self._events.get(job_id, ())]
        for event in woken:
            event.set()

    def _listen(self) -> None:
        assert self._dsn is not None
        backoff = 0.1
        probe: str | None = None  # the probe's payload until it came back or was given up
        probe_until = 0.0
        deaf = False  # the probe never came back: notifications do not arrive
        while not self._stopping.is_set():
            try:
                conn = psycopg.Connection.connect(
                    self._dsn, **connect_options(self._dsn, self._prepare)
                )
                with conn:
                    conn.execute(self._core.sql.listen_done)
                    if not deaf:
                        self._listening.set()
                    self._tried.set()
                    backoff = 0.1
                    polled = 0.0  # (re)connected: look at once, notifications were missed
                    while not self._stopping.is_set():
                        if time.monotonic() - polled >= self._poll_interval:
                            polled = time.monotonic()
                            with self._lock:
                                waited = list(self._events)
                            if waited:
                                unended = run_sync(conn, self._core.unended(waited))
                                self._wake([i for i in waited if i not in unended])
                        if probe_until == 0.0:  # once: the poll backs up notifications
                            # that never arrive, but the user should hear of it
                            probe = probe_payload()
                            probe_until = time.monotonic() + PROBE_WAIT
                            self._run(self._core.probe(self._core.sql.done_channel, probe))
                        elif probe is not None and time.monotonic() >= probe_until:
                            # Deaf: each waiter looks for itself, as when not listening.
                            probe, deaf = None, True
                            self._listening.clear()
                            with self._lock:
                                waited = list(self._events)
                            self._wake(waited)
                            log.warning("%s", deaf_warning("the result listener"))
                        for note in conn.notifies(timeout=_LISTEN_SLICE):
                            if note.payload == probe:
                                probe = None
                            elif note.payload.isdigit():
                                self._wake([int(note.payload)])
            except (psycopg.Error, PgQueueError) as exc:  # (a plan's errors are translated)
                self._listening.clear()
                self._tried.set()
                if self._stopping.is_set():
                    return
                log.warning("result connection lost (%s); reconnecting in %.1fs", exc, backoff)
                wait_event(self._stopping, backoff)
                backoff = min(backoff * 2, 10.0)


def job_result(job: Job) -> Any:
    """A job's result: its output if it completed, else JobFailedError."""
    if job.state is JobState.completed:
        return job.output
    raise JobFailedError(job.id, job.name, job.state, job.output)
