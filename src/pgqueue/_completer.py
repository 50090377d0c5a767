"""Writes outcomes in batches: whatever piled up while the previous write ran goes next."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ._core import Core
from ._db import Plan
from ._executor import Outcome
from ._payload import encode_json, storable
from .errors import PgQueueError

__all__ = ["Completer", "WriteTimeout", "write_apart"]

log = logging.getLogger("pgqueue.worker")

Runner = Callable[[Plan[Any]], Awaitable[Any]]
T = TypeVar("T")

# Seconds a worker's write may take before it counts as waiting on a row another
# transaction locked: it is then written in halves, so that row holds back no other.
WRITE_TIMEOUT = 10.0
# Seconds before an outcome that waited on such a lock is tried again.
RETRY_LOCKED = 10.0


class WriteTimeout(PgQueueError):
    """A write that did not return in time: a row it changes is locked by another
    transaction (a caller's open transaction, say). The same write may pass later."""


async def write_apart(
    write: Callable[[list[T]], Awaitable[list[int]]],
    items: list[T],
    refused: Callable[[T, PgQueueError], Awaitable[list[int]]],
) -> list[int]:
    """``write(items)``; when the database refuses it (not when it is out of reach, which
    raises), or it waits more than WRITE_TIMEOUT seconds (on a row another transaction
    locked), write the items in halves down to those it refuses or that wait, which
    ``refused`` handles (a WriteTimeout for those that wait). Returns what the writes
    returned."""
    try:
        return await asyncio.wait_for(write(items), WRITE_TIMEOUT)
    except asyncio.TimeoutError:
        error: PgQueueError = WriteTimeout(
            f"the write did not return within {WRITE_TIMEOUT:g}s: a row it changes is "
            "locked by another transaction"
        )
    except PgQueueError as exc:
        if exc.transient:
            raise
        error = exc
    if len(items) == 1:
        return await refused(items[0], error)
    middle = len(items) // 2
    return [
        *await write_apart(write, items[:middle], refused),
        *await write_apart(write, items[middle:], refused),
    ]


class Completer:
    """Buffers outcomes and records them, completions and failures each in one statement.

    A write that fails (connection lost) is retried with backoff; a batch the database
    refuses is written in halves down to the outcome it refuses (see ``write_apart``):
    that one is recorded as a failure that says why, or kept for later if its row is locked.
    Each outcome names its run (job id and run_id), and the database records it only while
    that run holds the job, so a retried write never records twice and a stale run's
    outcome changes nothing (it is logged).
    """

    def __init__(
        self,
        run: Runner,
        core: Core,
        max_batch: int = 1000,
        max_bytes: int = 16 << 20,
        written: Callable[[], None] = lambda: None,
        failures: Callable[[list[Outcome], dict[int, str]], None] | None = None,
    ) -> None:
        self._run = run
        self._core = core
        self._written = written  # told after each write
        self._failures = failures  # told the state each failed run's job went to
        self._max_batch = max_batch
        self._max_bytes = max_bytes
        self._pending: list[Outcome] = []
        self._locked: list[Outcome] = []  # outcomes whose row another transaction locked
        self._locked_retry_at = 0.0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.written = 0

    def add(self, outcome: Outcome) -> None:
        """Queue an outcome for the next write."""
        self._pending.append(outcome)
        self._idle.clear()
        self._wake.set()

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The writing task (the worker's health looks at it)."""
        return self._task

    async def start(self) -> None:
        """Start the writer task."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="pgqueue-completer")

    async def flush(self) -> None:
        """Wait until every queued outcome is written."""
        if self._task is None:
            await self.start()
        waiter = asyncio.ensure_future(self._idle.wait())
        assert self._task is not None
        done, _ = await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:
            waiter.cancel()
            self._task.result()

    @property
    def pending(self) -> int:
        """Outcomes not written yet."""
        return len(self._pending)

    async def stop(self, timeout: float = 5.0) -> None:
        """Flush (for at most ``timeout`` seconds), then stop the writer. Idempotent."""
        if self._task is None:
            return
        if not self._task.done():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.flush(), timeout)
        task, self._task = self._task, None
        self._stopping = True  # in case the cancellation comes back as a psycopg error
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _loop(self) -> None:
        backoff = 0.05
        loop = asyncio.get_running_loop()
        while not self._stopping:
            if self._locked:  # wake to try them again, if nothing comes sooner
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(
                        self._wake.wait(), max(self._locked_retry_at - loop.time(), 0)
                    )
                if loop.time() >= self._locked_retry_at:
                    self._pending += self._locked
                    self._locked = []
            else:
                await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._next_batch()
                try:
                    await write_apart(self._write, batch, self._refused)
                except PgQueueError as exc:  # out of reach: the batch is written again
                    if self._stopping:
                        return
                    log.warning(
                        "recording %d outcomes failed (%s); retrying in %.2fs",
                        len(batch),
                        exc,
                        backoff,
                    )
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                except Exception:  # a bug: drop the batch rather than every later outcome
                    log.exception(
                        "recording %d outcomes failed; they are dropped, and their "
                        "jobs go back once their heartbeats lapse",
                        len(batch),
                    )
                backoff = 0.05
                del self._pending[: len(batch)]
                self.written += len(batch)
                self._written()
            self._idle.set()

    def _next_batch(self) -> list[Outcome]:
        """The oldest outcomes, at most ``max_batch`` of them and about ``max_bytes`` of
        JSON (at least one), so no statement grows past what the database takes."""
        size = 0
        for count, outcome in enumerate(itertools.islice(self._pending, self._max_batch)):
            if outcome.output is not None:
                size += len(outcome.output)
            if outcome.progress is not None:
                size += len(outcome.progress)
            if outcome.logs is not None:
                size += len(outcome.logs)
            if size > self._max_bytes and count:
                return self._pending[:count]
        return self._pending[: self._max_batch]

    async def _refused(self, outcome: Outcome, error: PgQueueError) -> list[int]:
        if isinstance(error, WriteTimeout):  # not refused: kept, and tried again later
            log.warning(
                "job %s: recording its %s outcome waits on a row lock another transaction "
                "holds; trying again in %gs",
                outcome.job_id,
                outcome.kind,
                RETRY_LOCKED,
            )
            self._locked.append(outcome)
            self._locked_retry_at = asyncio.get_running_loop().time() + RETRY_LOCKED
            return []
        if outcome.kind == "logged":  # only lines of a run cut short: nothing to fail
            log.error("job %s: the database refused its run's logs (%s)", outcome.job_id, error)
            return []
        log.error(
            "job %s: the database refused its %s outcome (%s); recording a failure instead",
            outcome.job_id,
            outcome.kind,
            error,
        )
        message = storable(f"the database refused the {outcome.kind} outcome: {error}")
        try:
            await self._write(
                [
                    Outcome(
                        outcome.job_id,
                        outcome.attempt,
                        outcome.run_id,
                        "failed",
                        encode_json({"type": "unrecordable", "message": message}),
                    )
                ]
            )
        except PgQueueError as exc:
            if exc.transient:
                raise
            log.error(
                "job %s: the database refused recording its failure too (%s); nothing "
                "is recorded, and the job goes back once its heartbeat lapses",
                outcome.job_id,
                exc,
            )
        return []

    async def _write(self, batch: list[Outcome]) -> list[int]:
        done = [o for o in batch if o.kind == "completed"]
        snoozed = [o for o in batch if o.kind == "snoozed"]
        logged = [o for o in batch if o.kind == "logged"]
        failed = [o for o in batch if o.kind in ("failed", "expired")]
        if done:
            recorded = await self._run(
                self._core.complete(
                    [o.job_id for o in done],
                    [o.run_id for o in done],
                    [o.output for o in done],
                    [o.progress for o in done],
                    _logs(done),
                )
            )
            _report_stale(done, recorded)
        if failed:
            states: dict[int, str] | None = None if self._failures is None else {}
            recorded = await self._run(
                self._core.fail(
                    [o.job_id for o in failed],
                    [o.run_id for o in failed],
                    [o.output for o in failed],
                    terminal=[o.terminal for o in failed],
                    final_states=["expired" if o.kind == "expired" else "failed" for o in failed],
                    logs=_logs(failed),
                    states=states,
                )
            )
            _report_stale(failed, recorded)
            if self._failures is not None and states is not None:
                self._failures(failed, states)
        if snoozed:
            recorded = await self._run(
                self._core.release(
                    [o.job_id for o in snoozed],
                    [o.run_id for o in snoozed],
                    [o.delay for o in snoozed],
                    _logs(snoozed),
                )
            )
            _report_stale(snoozed, recorded)
        if logged:  # runs cut short: whatever state their jobs are in now
            await self._run(
                self._core.add_logs(
                    [o.job_id for o in logged], [o.run_id for o in logged], _logs(logged) or []
                )
            )
        return []


def _logs(outcomes: list[Outcome]) -> list[str | None] | None:
    """The outcomes' logs, or None when none logged anything (the common case)."""
    if all(o.logs is None for o in outcomes):
        return None
    return [o.logs for o in outcomes]


def _report_stale(outcomes: list[Outcome], recorded: list[int]) -> None:
    if len(recorded) == len(outcomes):
        return
    kept = set(recorded)
    for o in outcomes:
        if o.job_id not in kept:
            log.warning(
                "job %s: the %s outcome of attempt %d was not recorded: that run no longer "
                "holds the job (it expired, was cancelled or was claimed again)",
                o.job_id,
                o.kind,
                o.attempt,
            )
