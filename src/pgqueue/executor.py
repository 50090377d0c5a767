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

__all__ = ["ActiveJob", "Executor", "Outcome"]

log = logging.getLogger("pgqueue.worker")


@dataclass(slots=True)
class ActiveJob(Job):
    """The job a handler runs: its record plus progress reporting and the cancellation signal."""

    _cancelled: bool = field(default=False, repr=False)
    _expired: bool = field(default=False, repr=False)
    _progress: str | None = field(default=None, repr=False)
    _notify_progress: Any = field(default=None, repr=False)
    _task: asyncio.Task[Any] | None = field(default=None, repr=False)

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


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ended: ``completed`` with output, or ``failed``/``expired`` with an error."""

    job_id: int
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

        The current task is the job's handle: ``cancel(id)``, expiry and shutdown cancel it.
        A sync handler keeps its thread after that (Python cannot stop a thread); its result
        is discarded and it sees ``job.cancelled``.
        """
        try:
            args, kwargs = definition.call_args(job)
        except InvalidPayloadError as exc:
            return Outcome(job.id, "failed", _encode(error_output(exc)), terminal=True)
        loop = asyncio.get_running_loop()
        job._task = asyncio.current_task()
        timer = loop.call_later(job.expire_in, _expire, job)
        try:
            if definition.is_async:
                result = await definition.func(*args, **kwargs)
            else:
                call = functools.partial(definition.func, *args, **kwargs)
                result = await loop.run_in_executor(self._pool, call)
        except asyncio.CancelledError:
            if job._expired:
                message = f"job ran past its expire_in of {job.expire_in:g}s"
                return Outcome(job.id, "expired",
                               _encode({"type": "expired", "message": message}))
            if job._cancelled:  # cancel(id) or shutdown: nothing to record here
                return None
            raise
        except Exception as exc:
            log.info("job %s (%s) failed: %r", job.id, job.name, exc)
            return Outcome(job.id, "failed", _encode(error_output(exc)))
        finally:
            timer.cancel()
            job._task = None
        if job._cancelled:
            return None
        try:
            output = encode_json(result, "output")
        except InvalidPayloadError as exc:
            return Outcome(job.id, "failed", _encode(error_output(exc)), terminal=True)
        return Outcome(job.id, "completed", output, progress=job.take_progress())


def _expire(job: ActiveJob) -> None:
    job._expired = True
    job.interrupt()


def _encode(value: Any) -> str:
    return encode_json(value, "error")
