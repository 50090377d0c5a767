"""Eager mode: ``send`` runs the handler at once, in the caller's thread, with no database."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import inspect
import itertools
import json
from collections.abc import Coroutine, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from .._async.queue import AsyncPgQueue
from .._async.results import AsyncJobHandle
from .._base import QueueBase
from .._config import check_name
from .._executor import RunningJob, Snooze
from .._payload import encode_json, error_output
from .._sync.queue import PgQueue
from .._sync.results import JobHandle
from ..errors import (
    InvalidInputError,
    InvalidPayloadError,
    JobFailedError,
    JobNotFoundError,
    PgQueueError,
    QueueNotFoundError,
)
from ..models import Job, JobState, QueueOptions, parse_options
from ._drain import blocking
from ._results import Drained, Run, RunFailedError

__all__ = ["EagerError", "EagerJobs", "eager", "eager_jobs"]

Q = TypeVar("Q", PgQueue, AsyncPgQueue)
T = TypeVar("T")

# What eager mode does itself; the methods that need no database (registering handlers)
# are left alone; every other public method raises EagerError.
_EMULATED = frozenset(
    {"send", "send_after", "insert", "result", "get_job_by_id", "create_queue", "start", "stop"}
)
_UNTOUCHED = frozenset({"job", "cron", "on", "add_monitor", "stop_working"})
# Options whose meaning needs the database (uniqueness across jobs, other jobs' ends, a
# queue to move to): refused rather than ignored.
_REFUSED_OPTIONS = {
    "singleton_key": "singleton keys",
    "singleton_seconds": "throttling",
    "singleton_next_slot": "debouncing",
    "depends_on": "dependencies",
    "run_anyway": "dependencies",
    "dead_letter": "dead-letter queues",
}
# The database's default retry limit, for a queue whose handler sets none.
_DEFAULT_RETRY_LIMIT = 2

_active: dict[int, EagerJobs] = {}
# True while a handler runs (in its context): its sends run after it returns.
_IN_HANDLER: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "pgqueue_eager_in_handler", default=False
)


class EagerError(PgQueueError):
    """Eager mode cannot do what was asked (it needs the database), or a send ran more
    jobs than ``max_runs`` (a job that sends itself).

    Example:
        ```python
        with eager(pq), pytest.raises(EagerError):
            pq.find_jobs("charge")  # reads the database: not in eager mode
        ```
    """


class EagerJobs:
    """What eager mode sent and ran: ``jobs`` (every job, in id order, as it is now: its
    state, output, retries) and ``runs`` (each run, as a drain reports them).

    Example:
        ```python
        with eager(pq) as jobs:
            pq.send("charge", {"order": 5, "total": 1})
        assert jobs.outputs("charge") == [{"charged": 1}]
        assert jobs.sent("receipt")[0].state is JobState.completed
        ```
    """

    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self.runs: list[Run] = []

    def job(self, id: int) -> Job:
        """The job of id ``id`` (JobNotFoundError if eager mode sent none)."""
        for job in self.jobs:
            if job.id == id:
                return job
        raise JobNotFoundError(f"eager mode sent no job {id}")

    def sent(self, name: str) -> list[Job]:
        """The jobs sent to queue ``name``."""
        return [j for j in self.jobs if j.name == name]

    def outputs(self, name: str | None = None) -> list[Any]:
        """What the completed runs (of queue ``name``, or all) returned, in run order."""
        return Drained(self.runs).outputs(name)


def eager_jobs(queue: QueueBase) -> EagerJobs | None:
    """The records of ``queue``'s eager mode while it is on, else None."""
    return _active.get(id(queue))


class _Eager:
    """The eager stand-ins of one queue object's methods."""

    def __init__(self, queue: QueueBase, raise_errors: bool, max_runs: int) -> None:
        self.queue = queue
        self.records = EagerJobs()
        self.raise_errors = raise_errors
        self.max_runs = max_runs
        self.is_async = isinstance(queue, AsyncPgQueue)
        self._ids = itertools.count(1)
        self._pending: list[Job] = []
        self._working = False
        self.queues: set[str] = set()  # made by create_queue (no handler here)
        self._turn: asyncio.Lock | None = None  # concurrent sends of the async flavour

    # -- sending -----------------------------------------------------------------------------

    def enqueue(self, name: str, data: Any, options: dict[str, Any], conn: Any) -> Job:
        """Validate a send as the real one does and hold its job to run."""
        _no_conn(conn)
        core = self.queue._core
        record, payload = core.job_record(name, data, options)
        refused = sorted(set(record) & set(_REFUSED_OPTIONS))
        if refused:
            raise EagerError(
                f"eager mode cannot emulate {_REFUSED_OPTIONS[refused[0]]} "
                f"(option {refused[0]!r}): test it on a database with drain()"
            )
        definition = core.registry.find(name)
        if definition is None and name not in self.queues:
            missing = QueueNotFoundError(name)
            missing.args = (
                f"queue {name!r} has no handler registered: eager mode knows only the queues "
                "of registered handlers and those create_queue made",
            )
            raise missing
        queue_options = {} if definition is None else definition.queue_options
        retry_limit = record.get(
            "retry_limit", queue_options.get("retry_limit", _DEFAULT_RETRY_LIMIT)
        )
        job = Job(
            id=next(self._ids),
            name=name,
            data=json.loads(payload),
            state=JobState.created,
            priority=record.get("priority", 0),
            retry_limit=retry_limit,
            group=record.get("group_key"),
        )
        return job

    def hold(self, jobs: list[Job]) -> None:
        """Record sent jobs; those with a handler are to run (the others wait, as for a
        worker of another application)."""
        self.records.jobs += jobs
        self._to_run(jobs)

    def _to_run(self, jobs: list[Job]) -> None:
        self._pending += [j for j in jobs if j.name in self.queue._core.registry]

    def create_queue(self, name: str, options: dict[str, Any]) -> bool:
        """Know queue ``name`` (checked as create_queue checks it): jobs sent to it without
        a handler are recorded, not run."""
        check_name(name)
        parse_options(QueueOptions, dict(options))
        if name in self.queues or name in self.queue._core.registry:
            return False
        self.queues.add(name)
        return True

    async def hold_and_work(self, jobs: list[Job]) -> None:
        """Record sent jobs and run them, unless a handler sent them (they run after that
        handler returns); a send concurrent with another's work waits for it to end (its
        jobs are only then to run: that work's failure does not drop them), so that its
        jobs have run when it returns."""
        if _IN_HANDLER.get():
            self.hold(jobs)
            return
        self.records.jobs += jobs
        if self._turn is None:
            self._turn = asyncio.Lock()
        async with self._turn:
            self._to_run(jobs)
            await self.work()

    async def work(self) -> None:
        """Run held jobs (and those they send) until none is left, unless a run is under
        way: a handler's sends run after it returns, as with a worker."""
        if self._working:
            return
        self._working = True
        runs = 0
        try:
            while self._pending:
                job = min(self._pending, key=lambda j: (-j.priority, j.id))
                self._pending.remove(job)
                runs += 1
                if runs > self.max_runs:
                    raise EagerError(
                        f"one send ran {self.max_runs} jobs (max_runs) and job {job.id} "
                        f"({job.name}) is still to run: does a job send itself forever?"
                    )
                run = await self.run(job)
                self.records.runs.append(run)
                if self.raise_errors and run.outcome == "failed":
                    raise RunFailedError(
                        f"job {job.id} ({job.name}) attempt {run.attempt} failed: {run.error}",
                        Drained(list(self.records.runs)),
                        run,
                    ) from run.exception
        except BaseException:
            # What this send left to run is dropped (its jobs stay recorded as they are):
            # a later send, maybe after the test caught this error, runs only its own.
            self._pending.clear()
            raise
        finally:
            self._working = False

    async def run(self, job: Job) -> Run:
        """One run of ``job``'s handler; a failure with retries left, or a snooze, holds
        the job again (to run at once: eager mode has no clock)."""
        definition = self.queue._core.registry[job.name]
        job.state = JobState.active
        job.attempt += 1
        running = RunningJob(
            **{f.name: getattr(job, f.name) for f in dataclasses.fields(Job) if f.init}
        )
        raised: BaseException | None = None
        output: Any = None
        terminal = False
        try:
            args, kwargs = definition.call_args(running)
            token = _IN_HANDLER.set(True)
            try:
                if definition.is_async:
                    value = await self.call_async(definition.func(*args, **kwargs))
                else:
                    value = definition.func(*args, **kwargs)
            finally:
                _IN_HANDLER.reset(token)
            output = json.loads(encode_json(value, "output"))
        except InvalidPayloadError as exc:  # bad data for its model, or an output not JSON
            raised, terminal = exc, True
        except Snooze:
            job.state = JobState.retry
            self._pending.append(job)
            return Run(job.id, job.name, job.attempt, job.data, "snoozed", job.state, None)
        except (KeyboardInterrupt, GeneratorExit, asyncio.CancelledError):
            raise
        except BaseException as exc:  # SystemExit too: a worker records it as a failure
            raised = exc
        if raised is None:
            job.state, job.output = JobState.completed, output
            return Run(job.id, job.name, job.attempt, job.data, "completed", job.state, output)
        error = error_output(raised)
        job.output = error
        job.errors = [*(job.errors or []), {"attempt": job.attempt, "error": error}]
        if not terminal and job.retry_count < job.retry_limit:
            job.retry_count += 1
            job.state = JobState.retry
            self._pending.append(job)
        else:
            job.state = JobState.failed
        return Run(
            job.id, job.name, job.attempt, job.data, "failed", job.state, error, exception=raised
        )

    async def call_async(self, coro: Coroutine[Any, Any, T]) -> T:
        if self.is_async:
            return await coro
        return blocking(lambda: coro)  # a blocking queue's async handler: a loop of its own

    # -- reading -----------------------------------------------------------------------------

    def result(self, job: int) -> Any:
        found = self.records.job(int(job))
        if found.state is JobState.completed:
            return found.output
        if found.state.finished:
            raise JobFailedError(found.id, found.name, found.state, found.output)
        if found.name not in self.queue._core.registry:
            raise EagerError(
                f"job {found.id} ({found.name}) has not run yet: its queue has no handler here"
            )
        raise EagerError(
            f"job {found.id} ({found.name}) has not run yet: in eager mode the jobs a "
            "handler sends run after it returns"
        )

    def get_job_by_id(self, id: int) -> Job | None:
        for job in self.records.jobs:
            if job.id == id:
                return dataclasses.replace(job)
        return None

    # -- the stand-ins -----------------------------------------------------------------------

    def methods(self) -> dict[str, Any]:
        """The queue object's methods as eager mode has them (instance attributes)."""
        patched: dict[str, Any] = {}
        for name in _public_methods(type(self.queue)):
            if name in _UNTOUCHED:
                continue
            if name not in _EMULATED:
                patched[name] = _refusal(name)
        patched.update(self._async_methods() if self.is_async else self._sync_methods())
        return patched

    def _handle(self, job_id: int) -> Any:
        if self.is_async:
            return AsyncJobHandle(job_id, self.queue)  # type: ignore[arg-type]
        return JobHandle(job_id, self.queue)  # type: ignore[arg-type]

    def _batch(self, jobs: Iterable[Mapping[str, Any]], conn: Any) -> list[Job]:
        held = []
        for i, spec in enumerate(list(jobs)):
            if not isinstance(spec, Mapping):
                raise InvalidInputError(f"job #{i} must be a mapping, got {type(spec).__name__}")
            rest = dict(spec)
            if "name" not in rest:
                raise InvalidInputError(f"job #{i} has no 'name'")
            name = rest.pop("name")
            held.append(self.enqueue(name, rest.pop("data", None), rest, conn))
        return held

    def _async_methods(self) -> dict[str, Any]:
        async def send(name: str, data: Any = None, *, conn: Any = None, **options: Any) -> Any:
            job = self.enqueue(name, data, options, conn)
            await self.hold_and_work([job])
            return self._handle(job.id)

        async def send_after(
            name: str, data: Any, start_after: Any, *, conn: Any = None, **options: Any
        ) -> Any:
            return await send(name, data, conn=conn, start_after=start_after, **options)

        async def insert(jobs: Iterable[Mapping[str, Any]], *, conn: Any = None) -> list[int]:
            held = self._batch(jobs, conn)
            await self.hold_and_work(held)
            return [j.id for j in held]

        async def result(job: Any, *, timeout: float | None = None) -> Any:
            return self.result(job)

        async def get_job_by_id(id: int, *, conn: Any = None) -> Job | None:
            return self.get_job_by_id(id)

        async def create_queue(name: str, *, conn: Any = None, **options: Any) -> bool:
            _no_conn(conn)
            return self.create_queue(name, options)

        async def start() -> Any:
            return self.queue

        async def stop(timeout: float = 30.0) -> None:
            return None

        return {
            "send": send,
            "send_after": send_after,
            "insert": insert,
            "result": result,
            "get_job_by_id": get_job_by_id,
            "create_queue": create_queue,
            "start": start,
            "stop": stop,
        }

    def _sync_methods(self) -> dict[str, Any]:
        def send(name: str, data: Any = None, *, conn: Any = None, **options: Any) -> Any:
            job = self.enqueue(name, data, options, conn)
            self.hold([job])
            _drive(self.work())
            return self._handle(job.id)

        def send_after(
            name: str, data: Any, start_after: Any, *, conn: Any = None, **options: Any
        ) -> Any:
            return send(name, data, conn=conn, start_after=start_after, **options)

        def insert(jobs: Iterable[Mapping[str, Any]], *, conn: Any = None) -> list[int]:
            held = self._batch(jobs, conn)
            self.hold(held)
            _drive(self.work())
            return [j.id for j in held]

        def result(job: Any, *, timeout: float | None = None) -> Any:
            return self.result(job)

        def get_job_by_id(id: int, *, conn: Any = None) -> Job | None:
            return self.get_job_by_id(id)

        def create_queue(name: str, *, conn: Any = None, **options: Any) -> bool:
            _no_conn(conn)
            return self.create_queue(name, options)

        def start() -> Any:
            return self.queue

        def stop(timeout: float = 30.0) -> None:
            return None

        return {
            "send": send,
            "send_after": send_after,
            "insert": insert,
            "result": result,
            "get_job_by_id": get_job_by_id,
            "create_queue": create_queue,
            "start": start,
            "stop": stop,
        }


def _no_conn(conn: object) -> None:
    if conn is not None:
        raise EagerError(
            "conn= works in your transaction, which needs the database: eager mode has none"
        )


def _drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (the blocking flavour's eager work: its async
    handlers run on a loop of their own) to its end, in this thread."""
    try:
        coro.send(None)
    except StopIteration as stop:
        result: T = stop.value
        return result
    coro.close()
    raise RuntimeError("eager mode's work suspended")  # pragma: no cover - cannot happen


def _public_methods(cls: type) -> list[str]:
    names = set()
    for klass in cls.__mro__:
        for name, value in vars(klass).items():
            if not name.startswith("_") and inspect.isfunction(value):
                names.add(name)
    return sorted(names)


def _refusal(name: str) -> Any:
    def refused(*args: Any, **kwargs: Any) -> Any:
        raise EagerError(
            f"{name}() needs the database, which eager mode does without: eager mode runs "
            "send, send_after, insert (and JobFunction.send), result and get_job_by_id; "
            "test the rest on a database with drain()"
        )

    return refused


@contextlib.contextmanager
def eager(queue: Q, *, raise_errors: bool = False, max_runs: int = 1000) -> Iterator[EagerJobs]:
    """Make ``queue`` run jobs at once, without a database, inside the ``with`` block:
    ``send`` (``send_after``, ``insert``, a job function's ``send``) validates the job as
    a real send does, runs its handler in the calling thread (an async handler of a
    blocking queue on an event loop of its own), then the jobs that handler sent, and
    returns the job's id (``result()`` gives its output). A failure is retried at once
    while retries remain; it does not raise unless ``raise_errors`` (RunFailedError).
    What needs the database (``conn=``, singleton keys, dependencies, ``find_jobs``,
    ``fetch``, the clock...) raises EagerError. Yields the records of what ran.

    Example:
        ```python
        def test_placing_an_order():
            with eager(pq) as jobs:
                handle = pq.send("charge", {"order": 5, "total": 1})
                assert handle.result() == {"charged": 1}  # the handler ran, then receipt
                assert [job.name for job in jobs.jobs] == ["charge", "receipt"]
        ```
    """
    if not isinstance(queue, AsyncPgQueue | PgQueue):
        raise InvalidInputError(
            f"eager() takes a PgQueue or an AsyncPgQueue, got {type(queue).__name__}"
        )
    if isinstance(max_runs, bool) or not isinstance(max_runs, int) or max_runs < 1:
        raise InvalidInputError(f"max_runs must be a positive integer, got {max_runs!r}")
    if id(queue) in _active:
        raise EagerError("this queue object is in eager mode already")
    if queue._runner is not None:
        raise EagerError(
            "the queue object is started: eager mode is for one that is not (stop() it "
            "first; a Django project's queue object starts again on its next use)"
        )
    mode = _Eager(queue, raise_errors, max_runs)
    patched = mode.methods()
    shadowed = {name: queue.__dict__[name] for name in patched if name in queue.__dict__}
    queue.__dict__.update(patched)
    _active[id(queue)] = mode.records
    try:
        yield mode.records
    finally:
        del _active[id(queue)]
        for name in patched:
            del queue.__dict__[name]
        queue.__dict__.update(shadowed)
