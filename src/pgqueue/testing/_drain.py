"""Running every job due now, one at a time, in claim order, on the real database."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import threading
import uuid
from collections.abc import Callable, Coroutine
from datetime import timedelta
from fnmatch import fnmatchcase
from typing import Any, TypeVar

from .._async.queue import AsyncPgQueue
from .._base import QueueBase
from .._compat import run_loop
from .._completer import Completer
from .._db import Plan
from .._executor import Deadline, Executor, Outcome, RunningJob, Snooze
from .._maintenance import MaintenanceResult
from .._registry import JobDefinition, pattern_regex
from .._sync.queue import PgQueue
from .._worker import select_handlers
from ..errors import InvalidInputError
from ..models import MAX_SECONDS, Job
from ._results import Drained, DrainError, DrainTimeoutError, Run, RunFailedError

__all__ = ["aadvance", "adrain", "advance", "blocking", "drain"]

T = TypeVar("T")
# Jobs a drain looks at per round to choose the next one (those of paused queues, or of
# queues whose limits hold them back, are skipped).
_LOOK_AHEAD = 1000
# The farthest advance() moves the clock at once (the clock refuses more than a century).
MAX_CLOCK_MOVE = 100 * 365 * 86400
# Seconds a timed-out handler gets to honour its cancellation before the drain moves on.
_CANCEL_GRACE = 1.0


class _Target:
    """The queue object, as a drain reaches it from a coroutine (a blocking one's calls go
    to a thread)."""

    def __init__(self, queue: QueueBase) -> None:
        if not isinstance(queue, AsyncPgQueue | PgQueue):
            raise InvalidInputError(
                f"expected a PgQueue or an AsyncPgQueue, got {type(queue).__name__}"
            )
        self.queue = queue

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        bound = getattr(self.queue, method)
        if isinstance(self.queue, AsyncPgQueue):
            return await bound(*args, **kwargs)
        return await asyncio.to_thread(bound, *args, **kwargs)

    async def run(self, plan: Plan[T], atomic: bool = False) -> T:
        result: T = await self.call("_run", plan, None, atomic)
        return result


async def _drain(
    target: _Target,
    *,
    queues: list[str] | None,
    timeout: float,
    max_runs: int,
    raise_errors: bool,
    schedules: bool,
    maintain: bool,
) -> Drained:
    queue = target.queue
    core = queue._core
    definitions = _handlers(queue, queues)
    chosen = {id(d) for d in definitions}
    names = [d.name for d in definitions if not d.is_pattern]
    patterns = [pattern_regex(d.name) for d in definitions if d.is_pattern]
    drained = Drained()
    await target.call("_declare_queues")
    if maintain:
        result: MaintenanceResult = await target.call("maintain")
        drained.maintenance = result
    if schedules:
        drained.scheduled = await target.call("run_schedules")
    worker_id = f"drain:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    executor = Executor(threads=1)
    completer = Completer(lambda plan: target.run(plan), core)
    await completer.start()
    try:
        while True:
            due = await target.run(core.due_order(names, patterns, _LOOK_AHEAD))
            job, definition = await _claim_next(target, due, chosen, worker_id)
            if job is None or definition is None:
                drained.held = [job_id for job_id, _, _ in due]
                return drained
            if len(drained.runs) >= max_runs:
                await target.run(core.release([job.id], [job.run_id]))
                raise DrainError(
                    f"drain ran {max_runs} jobs (max_runs) and jobs are still due, the "
                    f"next one {_label(job)}: does a job send itself forever?",
                    drained,
                )
            run = await _run_one(target, completer, executor, job, definition, timeout, drained)
            drained.runs.append(run)
            if raise_errors and run.outcome in ("failed", "expired"):
                raise RunFailedError(
                    f"{_label(job)} attempt {job.attempt} {run.outcome}: {run.error}",
                    drained,
                    run,
                ) from run.exception
    finally:
        await completer.stop()
        executor.shutdown()


def _handlers(queue: QueueBase, queues: list[str] | None) -> list[JobDefinition]:
    """The handlers a drain runs: all of ``queue``'s, or those serving ``queues``."""
    return select_handlers(queue._core.registry.definitions(), queues)


async def _claim_next(
    target: _Target,
    due: list[tuple[int, str, bool]],
    chosen: set[int],
    worker_id: str,
) -> tuple[RunningJob | None, JobDefinition | None]:
    """Claim one job of the first queue (in the order of its first due job) that is not
    paused, is served by a chosen handler and lets one of its jobs start now."""
    core = target.queue._core
    tried: set[str] = set()
    for _, name, paused in due:
        if paused or name in tried:
            continue
        tried.add(name)
        definition = core.registry.find(name)
        if definition is None or id(definition) not in chosen:
            continue
        if definition.is_pattern and not fnmatchcase(name, definition.name):
            continue
        plan = core.fetch(name, 1, worker_id, factory=RunningJob.from_values)
        claimed = await target.run(plan, atomic=True)
        if claimed:
            job = claimed[0]
            assert isinstance(job, RunningJob)
            return job, definition
    return None, None


async def _run_one(
    target: _Target,
    completer: Completer,
    executor: Executor,
    job: RunningJob,
    definition: JobDefinition,
    timeout: float,
    drained: Drained,
) -> Run:
    """Run ``job``'s handler as a worker does (its expire_in too), record the outcome,
    and read back the state the job went to."""
    raised: list[BaseException] = []
    Deadline.arm([job], asyncio.get_running_loop())
    task = asyncio.ensure_future(executor.run(job, _watched(definition, raised)))
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        job.interrupt()
        await asyncio.wait({task}, timeout=_CANCEL_GRACE)
        Deadline.release(job)
        message = (
            f"{_label(job)} attempt {job.attempt} did not finish within the drain's "
            f"timeout of {timeout:g}s"
        )
        completer.add(
            Outcome.error(job, "failed", {"type": "DrainTimeout", "message": message}, True)
        )
        await completer.flush()
        raise DrainTimeoutError(message, drained, job)
    Deadline.release(job)
    outcome = task.result()
    if outcome is not None:
        completer.add(outcome)
        await completer.flush()
    after: Job | None = await target.run(target.queue._core.get_job_by_id(job.id))
    if outcome is None:
        kind, output = "cancelled", None
    else:
        kind = outcome.kind
        output = None if outcome.output is None else json.loads(outcome.output)
    return Run(
        id=job.id,
        name=job.name,
        attempt=job.attempt,
        data=job.data,
        outcome=kind,
        state=None if after is None else after.state,
        output=output,
        exception=raised[-1] if raised and kind == "failed" else None,
    )


def _watched(definition: JobDefinition, raised: list[BaseException]) -> JobDefinition:
    """``definition`` with a handler that keeps what it raises in ``raised`` (the stored
    error is text; a test that asks to raise wants the exception and its traceback)."""
    func = definition.func

    def keep(exc: BaseException) -> None:
        if not isinstance(exc, Snooze | asyncio.CancelledError):
            raised.append(exc)

    if definition.is_async:

        async def watched_async(*args: Any, **kwargs: Any) -> Any:
            try:
                return await func(*args, **kwargs)
            except BaseException as exc:
                keep(exc)
                raise

        return dataclasses.replace(definition, func=watched_async)

    def watched(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BaseException as exc:
            keep(exc)
            raise

    return dataclasses.replace(definition, func=watched)


def _label(job: Job) -> str:
    return f"job {job.id} ({job.name})"


def _refuse_unseen(queue: QueueBase) -> None:
    """Refuse to drain where the caller's jobs are in a transaction still open (checked in
    the caller's thread: Django's connections are the thread's)."""
    unseen = queue._unseen_sends()
    if unseen is not None:
        raise InvalidInputError(f"drain() cannot run the jobs sent here: {unseen}")


def _check(timeout: object, max_runs: object) -> tuple[float, int]:
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not 0 < timeout <= MAX_SECONDS
    ):
        raise InvalidInputError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if isinstance(max_runs, bool) or not isinstance(max_runs, int) or max_runs < 1:
        raise InvalidInputError(f"max_runs must be a positive integer, got {max_runs!r}")
    return float(timeout), max_runs


def blocking(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``main()`` on an event loop of its own: in this thread, or in another when this
    one already runs a loop (a blocking queue used from an async test)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run_loop(main())
    box: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            box.append(run_loop(main()))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="pgqueue-drain")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return box[0]


async def adrain(
    queue: AsyncPgQueue,
    *,
    queues: list[str] | None = None,
    timeout: float = 30.0,
    max_runs: int = 1000,
    raise_errors: bool = False,
    schedules: bool = True,
    maintain: bool = True,
) -> Drained:
    """Run every job due now on the started ``queue``'s schema, one at a time, until none
    is due: the jobs those jobs send too, and failed jobs whose retry is due at once.

    Jobs run in claim order across the queues of the registered handlers (or of
    ``queues``): priority, then due time, then id; a paused queue's jobs and those its
    limits hold back are left (``held``). First, unless turned off, a maintenance pass
    (``maintain``: expiry of runs past their time, retention) and the due cron slots
    (``schedules``). Handlers run as in a worker (sync ones on a thread), each within
    ``timeout`` seconds (else DrainTimeoutError, naming the job; its run is recorded as
    failed), at most ``max_runs`` runs (else DrainError: a job that sends itself).
    A failing handler does not raise: its run is in the result, unless ``raise_errors``
    (then RunFailedError, caused by what the handler raised).

    Example:
        ```python
        async def test_an_order_is_charged(pgqueue_aqueue):
            await pgqueue_aqueue.send("charge", {"order": 1, "total": 30})
            drained = await adrain(pgqueue_aqueue)
            assert drained.names == ["charge", "receipt"]  # charge sent the receipt
            assert not drained.failed
        ```
    """
    timeout, max_runs = _check(timeout, max_runs)
    target = _Target(queue)
    _refuse_unseen(queue)
    return await _drain(
        target,
        queues=queues,
        timeout=timeout,
        max_runs=max_runs,
        raise_errors=raise_errors,
        schedules=schedules,
        maintain=maintain,
    )


def drain(
    queue: PgQueue,
    *,
    queues: list[str] | None = None,
    timeout: float = 30.0,
    max_runs: int = 1000,
    raise_errors: bool = False,
    schedules: bool = True,
    maintain: bool = True,
) -> Drained:
    """Run every job due now on the started ``queue``'s schema, one at a time, in claim
    order, until none is due (see :func:`adrain`, its asyncio twin, for the details).

    Example:
        ```python
        def test_an_order_is_charged(pgqueue_queue):
            pgqueue_queue.send("charge", {"order": 1, "total": 30})
            drained = drain(pgqueue_queue)
            assert drained.names == ["charge", "receipt"]  # charge sent the receipt
            assert drained.outputs("charge") == [{"charged": 30}]
        ```
    """
    timeout, max_runs = _check(timeout, max_runs)
    target = _Target(queue)
    if not isinstance(queue, PgQueue):
        raise InvalidInputError("drain() takes a PgQueue: await adrain() for an AsyncPgQueue")
    _refuse_unseen(queue)
    return blocking(
        lambda: _drain(
            target,
            queues=queues,
            timeout=timeout,
            max_runs=max_runs,
            raise_errors=raise_errors,
            schedules=schedules,
            maintain=maintain,
        )
    )


def _check_options(queue: QueueBase, options: dict[str, Any]) -> None:
    """Refuse the drain options of an advance before it moves the clock."""
    unknown = sorted(set(options) - _DRAIN_OPTIONS)
    if unknown:
        raise InvalidInputError(
            f"unknown drain option {unknown[0]!r} (options: {', '.join(sorted(_DRAIN_OPTIONS))})"
        )
    _check(options.get("timeout", 30.0), options.get("max_runs", 1000))
    _handlers(queue, options.get("queues"))


_DRAIN_OPTIONS = frozenset(
    {"queues", "timeout", "max_runs", "raise_errors", "schedules", "maintain"}
)


def _steps(by: float | timedelta, step: float | timedelta | None) -> list[timedelta]:
    total = by if isinstance(by, timedelta) else _seconds("by", by)
    if total < timedelta(0):
        raise InvalidInputError(f"advance moves the clock forward, got {by!r}")
    if step is None:
        return [total]
    size = step if isinstance(step, timedelta) else _seconds("step", step)
    if size <= timedelta(0):
        raise InvalidInputError(f"step must be positive, got {step!r}")
    count = -(-total // size)
    if count > 100_000:
        raise InvalidInputError(f"advancing {total} by {size} takes {count} steps; at most 100,000")
    moves = [size] * (total // size)
    rest = total - size * (total // size)
    return [*moves, rest] if rest else moves


def _seconds(what: str, value: object) -> timedelta:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not abs(value) <= MAX_CLOCK_MOVE  # NaN fails this too
    ):
        raise InvalidInputError(f"{what} must be seconds or a timedelta, got {value!r}")
    return timedelta(seconds=value)


async def aadvance(
    queue: AsyncPgQueue,
    by: float | timedelta,
    *,
    step: float | timedelta | None = None,
    **options: Any,
) -> Drained:
    """Move ``queue``'s schema clock forward ``by`` (seconds or a timedelta) and drain
    (:func:`adrain`, with ``options``): delays, retry backoff, cron slots and expiry come
    due at once, no sleep. With ``step``, in steps of that size, draining after each (so
    an hourly schedule fires each hour of a day, as it would with workers running).

    Example:
        ```python
        async def test_the_report_runs_every_hour(pgqueue_aqueue):
            # the application: @pq.cron("0 * * * *", name="hourly-report")
            drained = await aadvance(pgqueue_aqueue, timedelta(days=1), step=timedelta(hours=1))
            assert len(drained.of("hourly-report")) == 24
        ```
    """
    moves = _steps(by, step)
    target = _Target(queue)  # adrain takes a PgQueue too
    _check_options(queue, options)
    drained = Drained()
    for move in moves:
        await target.call("move_clock", move)
        try:
            drained.extend(await adrain(queue, **options))
        except DrainError as exc:
            raise _so_far(drained, exc) from exc.__cause__
    return drained


def advance(
    queue: PgQueue,
    by: float | timedelta,
    *,
    step: float | timedelta | None = None,
    **options: Any,
) -> Drained:
    """Move ``queue``'s schema clock forward ``by`` and drain (see :func:`aadvance`).

    Example:
        ```python
        def test_the_reminder_waits_a_day(pgqueue_queue):
            pgqueue_queue.send("remind", {"user": 7}, start_after=timedelta(days=1))
            assert len(drain(pgqueue_queue)) == 0  # not due yet
            assert len(advance(pgqueue_queue, timedelta(days=1)).of("remind")) == 1
        ```
    """
    moves = _steps(by, step)
    if not isinstance(queue, PgQueue):
        raise InvalidInputError("advance() takes a PgQueue: await aadvance() for an AsyncPgQueue")
    _check_options(queue, options)
    drained = Drained()
    for move in moves:
        queue.move_clock(move)
        try:
            drained.extend(drain(queue, **options))
        except DrainError as exc:
            raise _so_far(drained, exc) from exc.__cause__
    return drained


def _so_far(drained: Drained, exc: DrainError) -> DrainError:
    """``exc`` of an advance's drain, its ``drained`` made what the whole advance did."""
    drained.extend(exc.drained)
    exc.drained = drained
    return exc
