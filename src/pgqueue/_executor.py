"""Runs one job's handler: its data, its time limit, its cancellation, its outcome."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import functools
import json
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

from ._config import check_seconds
from ._payload import encode_json, error_output
from ._registry import JobDefinition
from ._runlog import RunLog, check_level, enter_run, leave_run
from .errors import InvalidPayloadError
from .models import MAX_SECONDS, Job

__all__ = ["Deadline", "Executor", "Outcome", "Raised", "RunOwner", "RunningJob", "Threads"]

log = logging.getLogger("pgqueue.worker")


class RunOwner(Protocol):
    """What runs a job: told of its progress reports and of its interruption."""

    def progress_reported(self) -> None:
        """A run reported progress (from any thread)."""

    def interrupted(self, job: RunningJob) -> None:
        """A run was asked to stop."""


class Snooze(BaseException):
    """Raised by :meth:`RunningJob.snooze` (or by a handler itself) to end the run and
    start the job again ``seconds`` later, spending no retry. A BaseException, so that a
    handler's ``except Exception`` does not swallow it.

    Example:
        ```python
        @pq.job("poll-export")
        def poll_export(data: dict) -> str:
            if not export_ready(data["id"]):
                raise Snooze(30)  # look again in 30 seconds
            return "ready"
        ```
    """

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = check_seconds("snooze", seconds, MAX_SECONDS)


@dataclass(slots=True)
class RunningJob(Job):
    """The job a handler runs: its record plus progress reporting and the cancellation signal.

    Example:
        ```python
        @pq.job("import")
        async def import_file(data: dict, job: RunningJob) -> int:
            rows = read_rows(data["path"])
            for n, row in enumerate(rows):
                if job.cancelled:
                    break
                save(row)
                job.progress({"done": n + 1, "of": len(rows)})
            job.log(f"imported {len(rows)} rows from attempt {job.attempt}")
            return len(rows)
        ```
    """

    _cancelled: bool = field(default=False, repr=False)
    _expired: bool = field(default=False, repr=False)
    _progress: str | None = field(default=None, repr=False)
    _task: asyncio.Task[Any] | None = field(default=None, repr=False)
    _deadline: Deadline | None = field(default=None, repr=False)
    _owner: RunOwner | None = field(default=None, repr=False)  # the worker running it
    _slot: Any = field(default=None, repr=False)  # the owner's, while the run takes a slot
    _log: RunLog | None = field(default=None, repr=False)

    @property
    def cancelled(self) -> bool:
        """True once the job is cancelled (``cancel(id)``), expired, or the worker stops."""
        return self._cancelled

    def progress(self, value: Any) -> None:
        """Record the job's progress (any JSON value); stored on the row within a moment."""
        self._progress = encode_json(value, "progress")
        if self._owner is not None:
            self._owner.progress_reported()

    def log(self, message: object, level: str | int = "info") -> None:
        """Add a line to this attempt's log (stored with the attempt however the run ends,
        the last 100 lines of up to 1,000 characters each; see ``Job.logs``). ``level`` is
        debug, info, warning, error or critical, or a ``logging`` level number."""
        number = check_level(level)
        if self._log is None:
            self._log = RunLog()
        self._log.add(number, message)

    def take_logs(self) -> str | None:
        """This attempt's log as JSON text, once (None if it logged nothing)."""
        run_log, self._log = self._log, None
        return None if run_log is None else run_log.encode(self.attempt)

    def take_progress(self) -> str | None:
        """The progress reported since the last call (None if none)."""
        value, self._progress = self._progress, None
        return value

    def restore_progress(self, value: str) -> None:
        """Give back progress taken for a write that failed, unless a newer one came."""
        if self._progress is None:
            self._progress = value

    def snooze(self, seconds: float) -> NoReturn:
        """End this run now and run the job again in ``seconds``, spending no retry (the
        job waits in ``retry`` meanwhile; its attempt count still grows)."""
        raise Snooze(seconds)

    def interrupt(self) -> None:
        """Flag the job cancelled and cancel the task running it."""
        self._cancelled = True
        if self._task is not None:
            self._task.cancel()
            if self._owner is not None:
                self._owner.interrupted(self)


class Deadline:
    """One timer for the jobs claimed together with the same ``expire_in``: when it fires,
    those still running expire. Cancelled (and its jobs let go) once all of them ended, so
    the hot path pays for one timer per claim instead of one per job."""

    __slots__ = ("_jobs", "_left", "_timer")

    def __init__(self, jobs: list[RunningJob], loop: asyncio.AbstractEventLoop) -> None:
        self._jobs = jobs
        self._left = len(jobs)
        self._timer = loop.call_later(jobs[0].expire_in, self._fire)
        for job in jobs:
            job._deadline = self

    @classmethod
    def arm(cls, jobs: list[RunningJob], loop: asyncio.AbstractEventLoop) -> None:
        """Give every job a deadline: one per distinct ``expire_in`` among them."""
        groups: dict[float, list[RunningJob]] = {}
        for job in jobs:
            groups.setdefault(job.expire_in, []).append(job)
        for group in groups.values():
            cls(group, loop)

    @staticmethod
    def release(job: RunningJob) -> None:
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
    The run is the job's id and run_id (its attempt is for the logs)."""

    job_id: int
    attempt: int
    run_id: int | None
    kind: str  # completed | failed | expired | snoozed | logged (cut short: its logs only)
    output: str | None
    terminal: bool = False
    progress: str | None = None
    delay: float = 0.0  # snoozed: seconds until it starts again
    logs: str | None = None  # what the run logged (RunLog.encode), stored with the attempt

    @classmethod
    def error(cls, job: Job, kind: str, error: object, terminal: bool = False) -> Outcome:
        """``job``'s run ended ``kind`` (failed or expired) with ``error`` (an exception, or
        the error to store as it is)."""
        output = encode_json(error_output(error), "error")
        return cls(job.id, job.attempt, job.run_id, kind, output, terminal)

    @classmethod
    def logged(cls, job: RunningJob) -> Outcome | None:
        """What a run cut short (cancelled, or stopped with its worker) logged, to store
        with its attempt; None when it logged nothing."""
        logs = job.take_logs()
        return (
            None
            if logs is None
            else cls(job.id, job.attempt, job.run_id, "logged", None, logs=logs)
        )


class Raised(Exception):
    """Carries what a sync handler raised when it may not travel as itself."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


class Threads:
    """The threads sync handlers run on: at most ``size`` at work at once. A thread whose
    job was given up on (it expired, was cancelled, or the worker stops) while its handler
    still runs is *stuck*: Python cannot stop it, so it no longer counts against ``size``
    and another thread takes its place; it rejoins the others if its handler ever returns.
    Daemon threads, so a stuck one never keeps the process from exiting."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._pid = os.getpid()
        self._work: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._waiting = 0  # calls submitted that no thread has taken yet
        self._stuck: set[Future[Any]] = set()

    @property
    def stuck(self) -> int:
        """How many threads run a handler that was given up on."""
        return len(self._stuck)

    def submit(self, call: Callable[[], Any]) -> Future[Any]:
        """Run ``call`` on a thread; its future holds the result."""
        future: Future[Any] = Future()
        with self._lock:
            self._work.put((future, call))
            self._waiting += 1
            self._grow()
        return future

    def give_up(self, future: Future[Any]) -> None:
        """Stop counting the thread that runs ``future`` (its caller no longer waits)."""
        with self._lock:
            if future.done() or future in self._stuck:
                return
            self._stuck.add(future)
            self._grow()  # its place, for calls that wait

    def shutdown(self) -> None:
        """Let idle threads end; stuck ones end with the process."""
        with self._lock:
            for _ in range(self._threads):
                self._work.put(None)

    def _grow(self) -> None:
        """Start threads while calls wait that no idle thread will take (under the lock)."""
        while self._waiting > self._idle and self._threads - len(self._stuck) < self._size:
            self._threads += 1
            self._idle += 1  # counted idle until it takes work, so submits do not overshoot
            threading.Thread(target=self._serve, name="pgqueue-job", daemon=True).start()

    def _serve(self) -> None:
        while True:
            item = self._work.get()
            with self._lock:
                self._idle -= 1
                if item is not None:
                    self._waiting -= 1
            if item is None:
                with self._lock:
                    self._threads -= 1
                return
            future, call = item
            if future.set_running_or_notify_cancel():
                try:
                    result = call()
                except BaseException as exc:  # SystemExit and KeyboardInterrupt included
                    _exit_if_forked(self._pid, exc)
                    # Those two would break the generators that carry a result to a task.
                    generator_control = isinstance(exc, GeneratorExit | StopIteration)
                    future.set_exception(Raised(exc) if generator_control else exc)
                else:
                    _exit_if_forked(self._pid, None)
                    future.set_result(result)
            with self._lock:
                if future in self._stuck:
                    self._stuck.discard(future)
                    log.warning(
                        "a sync handler given up on has returned; its thread is "
                        "free again (%d still stuck)",
                        len(self._stuck),
                    )
                if self._threads - len(self._stuck) > self._size:  # its place was taken
                    self._threads -= 1
                    return
                self._idle += 1


class Executor:
    """Calls handlers: async ones in the job's task, sync ones on :class:`Threads`, each
    under expire_in."""

    def __init__(self, threads: int, capture: int | None = None) -> None:
        self.threads = Threads(threads)
        self._pid = os.getpid()
        self._capture = capture  # the least logging level a run's log captures, if any

    def shutdown(self) -> None:
        """Stop the threads without waiting for stuck sync handlers."""
        self.threads.shutdown()

    async def run(self, job: RunningJob, definition: JobDefinition) -> Outcome | None:
        """Run the handler in the current task (see :meth:`_call`), logging its start
        (DEBUG) and its end: completed or snoozed at INFO, failed or expired at WARNING
        with the error and its traceback. Each line carries the job's queue, id, attempt
        and the run's duration as record attributes (``extra``), for structured logs."""
        fields = {"queue": job.name, "job_id": job.id, "attempt": job.attempt}
        log.debug("job %s (%s) attempt %d started", job.id, job.name, job.attempt, extra=fields)
        began = time.monotonic()
        outcome = await self._call(job, definition)
        if outcome is not None and job._log is not None and (logs := job.take_logs()):
            outcome = dataclasses.replace(outcome, logs=logs)
        if outcome is None or not log.isEnabledFor(
            logging.INFO if outcome.kind in ("completed", "snoozed") else logging.WARNING
        ):
            return outcome
        fields["duration"] = round(time.monotonic() - began, 6)
        head = f"job {job.id} ({job.name}) attempt {job.attempt} {outcome.kind}"
        took = f"{fields['duration']:.3f}s"
        if outcome.kind == "completed":
            log.info("%s in %s", head, took, extra=fields)
        elif outcome.kind == "snoozed":
            log.info("%s for %gs after %s", head, outcome.delay, took, extra=fields)
        else:
            error = json.loads(outcome.output or "null")
            if not isinstance(error, dict):
                error = {"message": error}
            trace = error.get("traceback")
            log.warning(
                "%s after %s: %s: %.500s%s",
                head,
                took,
                error.get("type", outcome.kind),
                error.get("message"),
                f"\n{trace.rstrip()}" if isinstance(trace, str) else "",
                extra=fields,
            )
        return outcome

    async def _call(self, job: RunningJob, definition: JobDefinition) -> Outcome | None:
        """Run the handler in the current task; None when the job was cancelled.

        The job's :class:`Deadline` (armed by the caller) expires it.

        The current task is the job's handle: ``cancel(id)``, expiry and shutdown cancel it.
        A sync handler keeps its thread after that (Python cannot stop a thread); its result
        is discarded and it sees ``job.cancelled``.
        """
        try:
            args, kwargs = definition.call_args(job)
        except InvalidPayloadError as exc:
            return Outcome.error(job, "failed", exc, terminal=True)
        job._task = asyncio.current_task()
        capture = None
        if self._capture is not None:  # logging records of this context join the run's log
            if job._log is None:
                job._log = RunLog(self._capture)
            else:
                job._log.capture = self._capture
            capture = enter_run(job._log)
        try:
            if job._cancelled:  # cancelled, or its time ran out, before it started
                raise asyncio.CancelledError
            if definition.is_async:
                result = await definition.func(*args, **kwargs)
            else:
                # In this task's context: its run's log, the run's trace span.
                context = contextvars.copy_context()
                call = functools.partial(context.run, definition.func, *args, **kwargs)
                future = self.threads.submit(call)
                try:
                    result = await asyncio.wrap_future(future)
                except asyncio.CancelledError:
                    if not future.done():
                        self.threads.give_up(future)
                        log.warning(
                            "job %s (%s): its sync handler still runs after the job "
                            "was %s; its thread is given up on (%d stuck)",
                            job.id,
                            job.name,
                            "expired" if job._expired else "stopped",
                            self.threads.stuck,
                        )
                    raise
        except asyncio.CancelledError:
            if job._cancelled:  # expired, cancel(id) or shutdown
                return _cut_short(job)
            raise
        except BaseException as exc:  # none may stop the worker (cancellation is above)
            _exit_if_forked(self._pid, exc)
            raised = exc.error if isinstance(exc, Raised) else exc
            if isinstance(raised, Snooze):
                return Outcome(
                    job.id, job.attempt, job.run_id, "snoozed", None, delay=raised.seconds
                )
            return Outcome.error(job, "failed", error_output(raised))
        finally:
            job._task = None
            if capture is not None:
                leave_run(capture)
        _exit_if_forked(self._pid, None)
        if job._cancelled:  # its handler returned although it was asked to stop
            return _cut_short(job)
        try:
            output = encode_json(result, "output")
        except InvalidPayloadError as exc:
            return Outcome.error(job, "failed", exc, terminal=True)
        return Outcome(
            job.id, job.attempt, job.run_id, "completed", output, False, job.take_progress()
        )


def _cut_short(job: RunningJob) -> Outcome | None:
    """The outcome of a run asked to stop: expired when its time ran out; None (nothing to
    record) when it was cancelled or its worker stops."""
    if not job._expired:
        return None
    message = f"job ran past its expire_in of {job.expire_in:g}s"
    return Outcome.error(job, "expired", {"type": "expired", "message": message})


# This process's pid, kept current across forks without a system call per job.
_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def _exit_if_forked(pid: int, error: BaseException | None) -> None:
    """In a child a handler forked (its pid is not the worker's), end that child when the
    handler returns or raises there, instead of letting it carry on as a second worker."""
    if _pid == pid:
        return
    code: object = 0 if error is None else 1
    if isinstance(error, SystemExit):
        code = 0 if error.code is None else error.code
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code if isinstance(code, int) else 1)
