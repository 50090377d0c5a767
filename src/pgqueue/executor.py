"""Runs one job's handler: its data, its time limit, its cancellation, its outcome."""

from __future__ import annotations

import asyncio
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .core import encode_json, error_output
from .errors import InvalidPayloadError
from .models import Job
from .registry import JobDefinition

__all__ = ["ActiveJob", "Deadline", "Executor", "Outcome"]

log = logging.getLogger("pgqueue.worker")


@dataclass(slots=True)
class ActiveJob(Job):
    """The job a handler runs: its record plus progress reporting and the cancellation signal."""

    _cancelled: bool = field(default=False, repr=False)
    _expired: bool = field(default=False, repr=False)
    _progress: str | None = field(default=None, repr=False)
    _notify_progress: Any = field(default=None, repr=False)
    _task: asyncio.Task[Any] | None = field(default=None, repr=False)
    _deadline: Deadline | None = field(default=None, repr=False)

    @property
    def cancelled(self) -> bool:
        """True once the job is cancelled (``cancel(id)``), expired, or the worker stops."""
        return self._cancelled

    def progress(self, value: Any) -> None:
        """Record the job's progress (any JSON value); stored on the row within a moment."""
        self._progress = encode_json(value, "progress")
        if self._notify_progress is not None:
            self._notify_progress()

    def take_progress(self) -> str | None:
        """The progress reported since the last call (None if none)."""
        value, self._progress = self._progress, None
        return value

    def interrupt(self) -> None:
        """Flag the job cancelled and cancel the task running it."""
        self._cancelled = True
        if self._task is not None:
            self._task.cancel()


class Deadline:
    """One timer for the jobs claimed together with the same ``expire_in``: when it fires,
    those still running expire. Cancelled (and its jobs let go) once all of them ended, so
    the hot path pays for one timer per claim instead of one per job."""

    __slots__ = ("_jobs", "_left", "_timer")

    def __init__(self, jobs: list[ActiveJob], loop: asyncio.AbstractEventLoop) -> None:
        self._jobs = jobs
        self._left = len(jobs)
        self._timer = loop.call_later(jobs[0].expire_in, self._fire)
        for job in jobs:
            job._deadline = self

    @classmethod
    def arm(cls, jobs: list[ActiveJob], loop: asyncio.AbstractEventLoop) -> None:
        """Give every job a deadline: one per distinct ``expire_in`` among them."""
        groups: dict[float, list[ActiveJob]] = {}
        for job in jobs:
            groups.setdefault(job.expire_in, []).append(job)
        for group in groups.values():
            cls(group, loop)

    @staticmethod
    def release(job: ActiveJob) -> None:
        """The job ended (whatever its outcome): it no longer expires."""
        deadline, job._deadline = job._deadline, None
        if deadline is not None:
            deadline._ended()

    def _ended(self) -> None:
        self._left -= 1
        if self._left == 0:
            self._timer.cancel()
            self._jobs = []

    def _fire(self) -> None:
        jobs, self._jobs = self._jobs, []
        for job in jobs:
            if job._deadline is self:  # still running
                job._expired = True
                job.interrupt()


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ended: ``completed`` with output, or ``failed``/``expired`` with an error.
    The run is the job's id and the attempt that claimed it."""

    job_id: int
    attempt: int
    kind: str  # completed | failed | expired
    output: str | None
    terminal: bool = False
    progress: str | None = None


class Executor:
    """Calls handlers: async ones as tasks, sync ones on a thread pool, each under expire_in."""

    def __init__(self, threads: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="pgqueue-job")

    def shutdown(self) -> None:
        """Stop the thread pool without waiting for abandoned sync handlers."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def run(self, job: ActiveJob, definition: JobDefinition) -> Outcome | None:
        """Run the handler in the current task; None when the job was cancelled.

        The job's :class:`Deadline` (armed by the caller) expires it.

        The current task is the job's handle: ``cancel(id)``, expiry and shutdown cancel it.
        A sync handler keeps its thread after that (Python cannot stop a thread); its result
        is discarded and it sees ``job.cancelled``.
        """
        try:
            args, kwargs = definition.call_args(job)
        except InvalidPayloadError as exc:
            return Outcome(job.id, job.attempt, "failed", _encode(error_output(exc)),
                           terminal=True)
        job._task = asyncio.current_task()
        try:
            if job._expired:  # its time ran out before it started
                raise asyncio.CancelledError
            if definition.is_async:
                result = await definition.func(*args, **kwargs)
            else:
                call = functools.partial(definition.func, *args, **kwargs)
                result = await asyncio.get_running_loop().run_in_executor(self._pool, call)
        except asyncio.CancelledError:
            if job._expired:
                message = f"job ran past its expire_in of {job.expire_in:g}s"
                return Outcome(job.id, job.attempt, "expired",
                               _encode({"type": "expired", "message": message}))
            if job._cancelled:  # cancel(id) or shutdown: nothing to record here
                return None
            raise
        except Exception as exc:
            log.info("job %s (%s) failed: %r", job.id, job.name, exc)
            return Outcome(job.id, job.attempt, "failed", _encode(error_output(exc)))
        finally:
            job._task = None
        if job._cancelled:
            return None
        try:
            output = encode_json(result, "output")
        except InvalidPayloadError as exc:
            return Outcome(job.id, job.attempt, "failed", _encode(error_output(exc)),
                           terminal=True)
        return Outcome(job.id, job.attempt, "completed", output, progress=job.take_progress())


def _encode(value: Any) -> str:
    return encode_json(value, "error")
