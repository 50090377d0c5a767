"""The worker: claims jobs for its registered handlers, runs them, records their outcomes.

One fetch loop serves every queue of the process. A queue is *dirty* when it may have
runnable jobs: a notification for it arrived, the look at every queue the worker takes each
poll interval (one statement, however many queues) found due jobs in it, or its last claim
filled its share of the free slots. The loop claims, in one statement per dirty queue, as
many jobs as its share, and sleeps until something makes a queue dirty again or frees a
slot. An idle worker thus costs one statement per poll interval, whatever its queues.

Queues share the slots fairly, whatever the order they were registered in. While several
queues want slots (they are dirty, or hold jobs claimed ahead that wait for a slot), each may
fill at most an equal share of the worker's slots; a claim round gives each claimable queue
an equal part of the room (free slots, and the claim-ahead room), the remainder and the
starting queue moving on from round to round; and a freed slot goes to the held jobs of the
queues in turn, one each, never beyond a queue's share. So a backlog in one queue delays
another queue's jobs by the runs of one of its jobs and a claim, not by the backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import threading
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, TypeVar

import psycopg

from ._async.runner import AsyncRunner
from ._compat import in_other_thread
from ._completer import Completer, write_apart
from ._config import check_count
from ._core import Core, QueueBusy, QueueRules
from ._db import Plan
from ._executor import Deadline, Executor, Outcome, RunningJob
from ._handlers import (
    REGISTRY_REFRESH,
    Conflict,
    OnConflict,
    check_app_name,
    check_on_conflict,
    conflict_message,
    register_plan,
    registrations,
)
from ._health import HealthReport, check_port, serve_health
from ._heartbeat import Heartbeat
from ._notifier import Notifier
from ._observe import Observer
from ._registry import JobDefinition, pattern_regex
from ._runlog import capture_level, capturing
from .errors import (
    ConnectError,
    HandlerConflictError,
    InvalidOptionError,
    PgQueueError,
    WorkerError,
)
from .models import MAX_SECONDS, MIN_HEARTBEAT, Job

__all__ = [
    "CANCEL_GRACE",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_HEARTBEAT",
    "DEFAULT_THREADS",
    "Worker",
    "select_handlers",
]

log = logging.getLogger("pgqueue.worker")
T = TypeVar("T")
R = TypeVar("R")

# The heartbeat a worker's runs promise unless their job sets one: a run silent for this
# long is dead, and maintenance sends its job back (a worker beats at a third of it).
DEFAULT_HEARTBEAT = 30.0
# Jobs one worker runs at once: async handlers are tasks, so a hundred cost little and let a
# claim fetch a hundred rows; sync handlers run on threads, ten unless told otherwise.
DEFAULT_CONCURRENCY = 100
DEFAULT_THREADS = 10
# Jobs a worker may hold claimed beyond its free slots, so that the next claim is under way
# while the last one's jobs run; only for queues whose runs are short (below
# _PREFETCH_RUNS_UNDER seconds on average), so that no job waits long behind a slow one.
_PREFETCH_RUNS_UNDER = 0.05
# Seconds a job claimed ahead waits for a slot at most: then the queue's runs have become
# slower than when it was claimed, and the worker hands it back for any worker to take
# (as it does a job whose expire_in ran out while it waited).
_PREFETCH_WAIT = 1.0
# Seconds an async handler gets to honour its cancellation before the worker lets it go.
CANCEL_GRACE = 5.0
# Seconds between two checks that the runs the database counts as this worker's are the
# runs it has (a claim whose reply was lost leaves jobs it never received).
RECONCILE_EVERY = 60.0
# Seconds a stopping worker gives each of its last writes (outcomes, then the hand-back),
# and the claim under way when the stop came.
_SHUTDOWN_WRITES = 5.0
# A worker is alive while its last statement that succeeded is at most this old, or three
# poll intervals, or its heartbeat, if longer: an idle worker reads its queues each poll
# interval, a busy one beats for its runs every third of its heartbeat.
HEALTH_TIMEOUT = 30.0
# Seconds before a worker tries again a queue with limits that let nothing start, when no
# time is known (its active jobs must end, here or in another worker).
_LIMITED_RETRY = 0.25


@dataclass
class _QueueState:
    name: str  # the queue's (its definition's, unless a pattern handler serves it)
    definition: JobDefinition
    limit: int
    active: int = 0
    dirty: bool = False  # the first refresh marks the queues with due jobs
    rules: QueueRules = field(default_factory=QueueRules)
    failures: int = 0  # claims in a row that failed for this queue alone
    retry_at: float = 0.0  # loop time before which a failing queue is not claimed from
    # Times something said to claim again at once (its rules changed, its runs' outcomes
    # were written): a claim under way when it came must not put the queue back to sleep.
    hurried: int = 0
    # Held back only by its groups' limits: a job sent meanwhile may be of another group.
    groups_held: bool = False
    # Claimed, no slot yet: (loop time it began to wait, job), the longest waiting first.
    waiting: deque[tuple[float, RunningJob]] = field(default_factory=deque)
    run_time: float = 1.0  # moving average of its runs' seconds: prefetch only if short


class Worker:
    """Runs the handlers registered in ``core``'s registry until stopped, reaching the
    database through ``runner``."""

    def __init__(
        self,
        runner: AsyncRunner,
        core: Core,
        *,
        queues: list[str] | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        threads: int = DEFAULT_THREADS,
        poll_interval: float = 2.0,
        shutdown_timeout: float = 30.0,
        until_empty: bool = False,
        heartbeat_seconds: float = DEFAULT_HEARTBEAT,
        capture_logs: bool | int | str = False,
        listen_dsn: str | None = None,
        emit: Callable[[Any, object], None] = lambda event, value: None,
        observer: Observer | None = None,
        health_port: int | None = None,
        health_host: str = "0.0.0.0",
        health_timeout: float | None = None,
        app_name: str | None = None,
        on_conflict: OnConflict = "warn",
    ) -> None:
        concurrency = check_count("concurrency", concurrency)
        # (again: the queue object's attributes may have been set since it checked them)
        app_name = check_app_name(app_name)
        on_conflict = check_on_conflict(on_conflict)
        if health_port is not None:
            check_port("health_port", health_port)
        if not isinstance(health_host, str) or not health_host:
            raise InvalidOptionError(f"health_host is a host name or address, got {health_host!r}")
        threads = check_count("threads", threads)
        poll_interval = _seconds("poll_interval", poll_interval, 0.001)
        shutdown_timeout = _seconds("shutdown_timeout", shutdown_timeout, 0.0)
        self._heartbeat = _seconds("heartbeat_seconds", heartbeat_seconds, MIN_HEARTBEAT)
        self._health_timeout = (
            max(3 * poll_interval, HEALTH_TIMEOUT, self._heartbeat)
            if health_timeout is None
            else _seconds("health_timeout", health_timeout, 0.001)
        )
        self._health_address = None if health_port is None else (health_host, health_port)
        self._started = False  # taking jobs: its loops run
        self._last_ok: float | None = None  # loop time of the last statement that succeeded
        self._last_error: str | None = None  # of the last statement that failed since
        self._fetching: asyncio.Task[None] | None = None
        self._toucher: asyncio.Task[None] | None = None
        self._notifier_task: asyncio.Task[None] | None = None
        self._capture = capture_level(capture_logs)
        definitions = select_handlers(core.registry.definitions(), queues)
        # Pattern handlers: the queues they serve are found in the queue table (see
        # _refresh_queues), each then served as if it had a handler of its own.
        self._patterns = [d for d in definitions if d.is_pattern]
        self._pattern_regexes = [pattern_regex(d.name) for d in self._patterns]
        self._runner = runner
        self._emit = emit  # tells the queue object's listeners (on("listening", ...))
        self._core = core
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._concurrency = concurrency
        self._threads = min(threads, concurrency)
        self._sync_active = 0  # runs of sync handlers: each holds a thread
        self._running = 0  # runs under way (the other jobs held wait for a slot)
        self._waiting = 0  # held jobs that wait for a slot: at most concurrency of them
        self._poll_interval = poll_interval
        self._shutdown_timeout = shutdown_timeout
        self._until_empty = until_empty
        self._states = {
            d.name: self._queue_state(d.name, d) for d in definitions if not d.is_pattern
        }
        self._active: dict[int, RunningJob] = {}  # the run of each job this worker holds
        self._interrupted: list[RunningJob] = []  # runs cut short while stopping
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._refresh = True  # read the queues' rules before claiming
        self._reconcile_at = 0.0  # loop time of the next reconciliation
        self._turn = 0  # moves the starting queue of each claim round and each start of held jobs
        self._share = concurrency  # slots one queue may fill while others want some too
        self._loop: asyncio.AbstractEventLoop | None = None
        # A stop may come from another thread or a signal handler before run() starts.
        self._control = threading.RLock()
        self._stop_asked = False
        self._executor = Executor(threads=self._threads, capture=self._capture)
        self._observer = observer  # metrics, tracing: None unless one is on
        self._completer = Completer(
            self._run,
            self._core,
            written=self._outcomes_written,
            failures=None if observer is None else observer.failures_written,
        )
        self._heartbeat_loop = Heartbeat(
            self._run, self._core, self._active, self._heartbeat, self._cancel_job
        )
        self._listen_dsn = listen_dsn
        if listen_dsn is None:  # polling only: cancellations are looked for as often
            self._heartbeat_loop.check_every = poll_interval
        self.processed = 0
        # The handler registry (see _handlers): this worker's rows, when to write them
        # again, and the conflicts already logged.
        self._registrations = registrations(definitions, app_name)
        self._on_conflict = on_conflict
        self._register_at = 0.0
        self._conflicts: set[tuple[str, str, str, str]] = set()

    def _queue_state(self, name: str, definition: JobDefinition) -> _QueueState:
        limit = self._concurrency if definition.is_async else self._threads
        return _QueueState(name, definition, min(definition.concurrency or limit, limit))

    @property
    def busy(self) -> int:
        """Runs under way."""
        return self._running

    @property
    def slots(self) -> int:
        """Runs that may be under way at once."""
        return self._concurrency

    async def _run(self, plan: Plan[Any]) -> Any:
        # Every statement of the worker is a plan of one statement: no transaction needed.
        try:
            result = await self._runner.run(plan, None, atomic=False)
        except PgQueueError as exc:
            self._last_error = str(exc)
            raise
        self._last_ok = self._time()
        self._last_error = None
        return result

    def health(self) -> HealthReport:
        """What the health endpoint answers: alive while the fetch loop, the completer,
        the notification listener and the heartbeat run and a statement succeeded within
        the health timeout; ready once started and until a stop is asked."""
        report = HealthReport(self.id, self._started, self._stopping.is_set())
        if not self._started:
            return report
        tasks = {"completer": self._completer.task, "heartbeat": self._toucher}
        if not report.stopping:  # (where a stop ends it on purpose)
            tasks["fetch loop"] = self._fetching
        if self._listen_dsn is not None:
            tasks["notification listener"] = self._notifier_task
        for name, task in tasks.items():
            if task is None or task.done():
                report.problems.append(f"the {name} is not running")
        now = self._time()
        since = None if self._last_ok is None else now - self._last_ok
        report.details["last_database_contact_seconds_ago"] = (
            None if since is None else round(since, 3)
        )
        if since is None or since > self._health_timeout:
            report.problems.append(
                f"no statement succeeded for {self._health_timeout:g}s"
                + (f": {self._last_error}" if self._last_error else "")
            )
        report.details["running"] = self._running
        return report

    # -- control -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the worker to stop gracefully (safe from any thread or signal handler)."""
        with self._control:
            self._stop_asked = True
            loop = self._loop
        if loop is None:  # not running yet: run() sees the request when it starts
            return
        if loop.is_running() and in_other_thread(loop):
            loop.call_soon_threadsafe(self._stopping.set)
            loop.call_soon_threadsafe(self._wake.set)
        else:
            self._stopping.set()
            self._wake.set()

    async def run(self, install_signal_handlers: bool = False) -> None:
        """Work until :meth:`stop` (or, with ``until_empty``, until nothing is runnable)."""
        with self._control:
            self._loop = asyncio.get_running_loop()
            if self._stop_asked:
                self._stopping.set()
        notifier = Notifier(
            self._listen_dsn,
            [self._core.sql.listen_jobs, self._core.sql.listen_cancel],
            self._on_notify,
            self._listening,
            prepare=self._runner.prepare,
            probe_channel=self._core.sql.cancel_channel,
            probe=lambda channel, payload: self._run(self._core.probe(channel, payload)),
            on_deaf=self._deaf,
        )
        self._last_ok = self._time()  # the queues were just declared
        health = None
        if self._health_address is not None:  # first: a port in use fails before any work
            health = await serve_health(*self._health_address, self.health)
        try:
            await self._register(starting=True)  # may refuse: before anything else starts
            signals = self._install_signals() if install_signal_handlers else []
            await self._completer.start()
            await notifier.start()
        except BaseException:
            if health is not None:
                await health.close()
            raise
        self._notifier_task = notifier.task
        toucher = asyncio.create_task(self._heartbeat_loop.run(), name="pgqueue-heartbeat")
        self._toucher = toucher
        if self._observer is not None:
            self._observer.worker_started(self)
        log.info(
            "worker %s started: queues %s, concurrency %d (threads %d)",
            self.id,
            ", ".join([*self._states, *(d.name for d in self._patterns)]),
            self._concurrency,
            self._threads,
        )
        with capturing(self._capture):  # until the last runs end
            try:
                await self._fetch_until_stopped(notifier)
            finally:
                try:
                    await self._shutdown()
                finally:
                    toucher.cancel()
                    await asyncio.gather(toucher, return_exceptions=True)
                    await notifier.stop()
                    await self._completer.stop()
                    self._executor.shutdown()
                    if self._observer is not None:
                        self._observer.worker_stopped(self)
                    for sig in signals:
                        self._loop.remove_signal_handler(sig)
                    if health is not None:
                        await health.close()
                    log.info("worker %s stopped after %d jobs", self.id, self.processed)

    async def _fetch_until_stopped(self, notifier: Notifier) -> None:
        """Run the fetch loop; once a stop is asked, give the statement under way a few
        seconds to return (the loop then ends by itself) before cutting it short."""
        fetching = asyncio.create_task(self._fetch_loop(notifier), name="pgqueue-fetch")
        self._fetching = fetching
        self._started = True
        stopped = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({fetching, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not fetching.done():
                done, _ = await asyncio.wait({fetching}, timeout=_SHUTDOWN_WRITES)
                if not done:
                    log.warning(
                        "a statement of the fetch loop did not return within %gs of "
                        "the stop: cutting it short",
                        _SHUTDOWN_WRITES,
                    )
                    fetching.cancel()
                    await asyncio.wait({fetching})
                    if fetching.cancelled():
                        return
            fetching.result()
        finally:
            stopped.cancel()
            if not fetching.done():  # this task itself was cancelled
                fetching.cancel()

    def _install_signals(self) -> list[int]:
        assert self._loop is not None
        installed: list[int] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._loop.add_signal_handler(sig, self._on_signal)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
                pass
        return installed

    def _on_signal(self) -> None:
        if self._stopping.is_set():
            log.warning("second signal: stopping now")
            self._shutdown_timeout = 0
            for job in self._active.values():
                job.interrupt()
        else:
            log.info("stopping: finishing active jobs (signal again to stop at once)")
        self.stop()

    # -- notifications -----------------------------------------------------------------------

    def _on_notify(self, channel: str, payload: str) -> None:
        if channel == self._core.sql.jobs_channel:  # "<queue>", or "<queue> changed"
            name, _, changed = payload.partition(" ")
            state = self._states.get(name)
            if state is None and self._serves_by_pattern(name):
                self._refresh = True  # a queue a pattern handler may serve: look at it
                self._wake.set()
            if state is not None:
                if not state.dirty:
                    state.dirty = True
                    self._share_slots(self._time())  # one more queue may want slots
                if state.rules.paused or changed:  # resumed or changed: look before claiming
                    self._refresh = True
                if changed or state.groups_held:  # what held it back may not hold now
                    self._hurry(state)
                self._wake.set()
        elif channel == self._core.sql.cancel_channel:  # "<job id>:<run id>"
            job_id, _, run_id = payload.partition(":")
            try:
                job = self._active.get(int(job_id))
            except ValueError:
                return
            if job is not None and str(job.run_id) == run_id:  # not a newer run of it
                self._cancel_job(job)

    def _serves_by_pattern(self, name: str) -> bool:
        """Whether one of the worker's pattern handlers matches queue ``name``, which has
        no handler of its own."""
        return (
            bool(self._patterns)
            and name not in self._core.registry.names
            and any(fnmatchcase(name, d.name) for d in self._patterns)
        )

    def _cancel_job(self, job: RunningJob) -> None:
        log.info("job %s (%s) cancelled while running", job.id, job.name)
        job.interrupt()

    def _outcomes_written(self) -> None:
        """Ended runs free their singleton keys and their queue's slots: queues that run one
        job per key, or have limits, may have claimable jobs now (no notification says so)."""
        for state in self._states.values():
            if state.rules.take_turns and (not state.dirty or state.retry_at > 0):
                state.dirty = True
                self._hurry(state)
                self._wake.set()

    @staticmethod
    def _hurry(state: _QueueState) -> None:
        """Let the queue be claimed from at once, whatever held it back."""
        state.retry_at = 0.0
        state.hurried += 1
        state.groups_held = False

    def _listening(self) -> None:
        # (Re)connected: whatever was sent meanwhile went unannounced; the refresh finds it.
        self._refresh = True
        self._wake.set()
        self._emit("listening", self.id)

    def _deaf(self) -> None:
        # Notifications do not arrive: cancellations are looked for at each poll.
        self._heartbeat_loop.check_every = self._poll_interval
        self._heartbeat_loop.wake.set()

    # -- fetching ----------------------------------------------------------------------------

    async def _refresh_queues(self) -> None:
        """Read the rules of the worker's queues, and mark dirty those with due jobs (one
        statement, however many queues: an idle worker's cost does not grow with them)."""
        found, due = await self._run(
            self._core.queue_rules(list(self._states), self._pattern_regexes)
        )
        for name in found.keys() - self._states.keys():
            definition = self._core.registry.find(name)
            if definition is not None and definition in self._patterns:
                self._states[name] = self._queue_state(name, definition)
                log.info("queue %s: served by pattern handler %s", name, definition.name)
        for name, state in self._states.items():
            state.rules = found.get(name, QueueRules())
            if name in due:
                state.dirty = True

    async def _fetch_loop(self, notifier: Notifier) -> None:
        backoff = 0.1
        failed_since: float | None = None  # the database out of reach since then
        while not self._stopping.is_set():
            try:
                if self._refresh:
                    self._refresh = False
                    await self._refresh_queues()
                if self._time() >= self._reconcile_at:
                    await self._reconcile()
                if self._time() >= self._register_at:
                    await self._register(starting=False)
                await self._claim_round()
                backoff = 0.1
                if failed_since is not None:
                    log.warning(
                        "claiming jobs works again after %.1fs of failures",
                        self._time() - failed_since,
                    )
                    failed_since = None
            except PgQueueError as exc:  # the database is out of reach: every queue waits
                if failed_since is None:
                    failed_since = self._time()
                log.warning("claiming jobs failed (%s); retrying in %.1fs", exc, backoff)
                await self._sleep_or_stop(backoff)
                backoff = min(backoff * 2, 5.0)
                self._refresh = True  # then marks dirty the queues with due jobs
                self._reconcile_at = 0.0  # a claim may have committed without its reply
                continue
            if self._until_empty and self._drained():
                # Outcomes not yet written may still send jobs back to retry: write them,
                # then look once more before calling the queues empty.
                await self._completer.flush()
                await self._refresh_queues()
                await self._claim_round()
                if self._drained():
                    return
            if notifier.task is not None and notifier.task.done():
                notifier.task.result()  # a dead notifier is a bug: surface it
                raise WorkerError("the notification listener stopped")
            now = self._time()
            if self._waiting:
                self._hand_back_late(now)
            if any(self._claimable(s, now) for s in self._states.values()):
                continue
            # Sleep until something wakes a queue, the poll interval, the moment a queue
            # whose claims failed may be tried again, the moment a job claimed ahead has
            # waited too long, or the next reconciliation.
            later = [
                s.retry_at - now
                for s in self._states.values()
                if s.dirty and not s.rules.paused and s.retry_at > now
            ]
            later += [
                s.waiting[0][0] + _PREFETCH_WAIT - now for s in self._states.values() if s.waiting
            ]
            timeout = min(
                [self._poll_interval, self._reconcile_at - now, self._register_at - now, *later]
            )
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                if timeout == self._poll_interval:
                    # A queue may have been paused, resumed or changed, or have jobs that
                    # became due: the refresh looks at every queue in one statement.
                    self._refresh = True
            self._wake.clear()

    async def _reconcile(self) -> None:
        """Hand back the runs the database counts as this worker's that it does not have:
        a claim that committed while its reply was lost. Outcomes are written first, so a
        run that just ended is not taken for one (skipped if they cannot be written now)."""
        try:
            await asyncio.wait_for(self._completer.flush(), 5.0)
        except asyncio.TimeoutError:
            return
        self._reconcile_at = self._time() + RECONCILE_EVERY
        held = await self._run(self._core.held_by(self.id))
        ours = {(job.id, job.run_id) for job in self._active.values()}
        strays = [(job_id, run_id) for job_id, run_id in held if (job_id, run_id) not in ours]
        if strays:
            released = await write_apart(self._release, strays, self._release_refused)
            log.warning(
                "handed back %d jobs claimed by this worker whose claim it never received: %s",
                len(released),
                ", ".join(map(str, released)),
            )

    async def _register(self, starting: bool) -> None:
        """Write this worker's handlers to the registry (at start, then every few minutes)
        and log the conflicts with other applications' not logged yet; at start with
        ``on_conflict="error"``, raise HandlerConflictError instead, having written nothing."""
        strict = starting and self._on_conflict == "error"
        plan = register_plan(self._core.sql, self._registrations, self.id, strict)
        try:
            conflicts: list[Conflict] = await self._runner.run(plan, None, True)
        except PgQueueError as exc:
            if strict:
                raise
            log.warning("could not write this worker's handlers to the registry: %s", exc)
            self._register_at = self._time() + min(REGISTRY_REFRESH, RECONCILE_EVERY)
            return
        self._register_at = self._time() + REGISTRY_REFRESH
        if strict and conflicts:
            raise HandlerConflictError(conflict_message(conflicts), conflicts)
        for conflict in conflicts:
            if conflict.key not in self._conflicts:
                self._conflicts.add(conflict.key)
                log.warning("%s", conflict.describe())

    def _time(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _claimable(self, state: _QueueState, now: float) -> bool:
        return self._wants_slots(state, now) and self._room(state) > 0

    def _drained(self) -> bool:
        """Nothing runs and no queue may have runnable jobs (a paused one has none)."""
        return not self._active and not any(
            s.dirty and not s.rules.paused for s in self._states.values()
        )

    async def _sleep_or_stop(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _free(self, state: _QueueState) -> int:
        """Runs of the queue that may start now."""
        free = min(state.limit - state.active, self._concurrency - self._running)
        if not state.definition.is_async:  # sync handlers share the threads
            free = min(free, self._threads - self._sync_active)
        return free

    def _room(self, state: _QueueState) -> int:
        """Jobs of the queue to claim now: its free slots, and while its runs are short,
        as many more to wait for a slot (the next claim is then under way while the
        last one's jobs run); not for a queue with limits, whose jobs start when claimed.
        A queue below its share while other queues' jobs claimed ahead wait (their runs
        are short: slots free soon) claims up to its share at once, its jobs taking the
        next slots that free, rather than one claim per freed slot."""
        room = max(self._startable(state), 0)
        if state.rules.limited:
            return room
        if self._waiting > len(state.waiting):
            below = min(self._share, state.limit) - state.active - len(state.waiting)
            room = max(room, below)  # (beyond the claim-ahead room, which others filled)
        if state.run_time < _PREFETCH_RUNS_UNDER:
            room += max(min(self._concurrency - self._waiting, state.limit - len(state.waiting)), 0)
        return room

    async def _claim_round(self) -> None:
        """Claim from every claimable queue its share of the room: the queues, taken from a
        starting point that moves on each round, each get an equal part of what the ones
        before them left (the first ones the remainder), so none waits on another's backlog."""
        now = self._time()
        turn = self._next_turn()
        self._share_slots(now)
        claimable = [s for s in self._states.values() if self._claimable(s, now)]
        start = turn % len(claimable) if claimable else 0
        ordered = claimable[start:] + claimable[:start]
        for i, state in enumerate(ordered):
            if self._stopping.is_set():
                return
            room = self._room(state)
            if room <= 0 or state.retry_at > now:
                continue
            free = -(-room // (len(ordered) - i))  # its share, rounded up
            hurried = state.hurried
            plan = self._core.fetch(
                state.name,
                free,
                self.id,
                self._make_job,
                state.rules,
                self._heartbeat,
                wait=False,
            )
            try:
                # One statement, except for policies whose fetchers take turns under a lock.
                jobs: list[Job] = await self._runner.run(plan, None, atomic=state.rules.take_turns)
            except QueueBusy as busy:  # another fetcher's turn, or the limits let none start
                if state.hurried == hurried:  # (else: claim again at once)
                    retry_in = _LIMITED_RETRY if busy.retry_in is None else busy.retry_in
                    state.retry_at = self._time() + max(retry_in, 0.01)
                    state.groups_held = busy.some_groups
                continue
            except ConnectError:
                raise
            except PgQueueError as exc:  # this queue's trouble: the others go on
                if _breaks_a_policy(exc) and await self._follow_policy(state):
                    state.retry_at = now  # jobs with an outdated policy: fixed, claim again
                    self._refresh = True
                    continue
                state.failures += 1
                delay = min(0.1 * 2 ** min(state.failures, 7), 10.0)
                state.retry_at = now + delay
                self._refresh = True
                log.warning(
                    "claiming from queue %s failed (%s); trying it again in %.1fs",
                    state.name,
                    exc,
                    delay,
                )
                continue
            state.failures = 0
            # A queue with limits may have had more runnable jobs than they let start.
            if len(jobs) < free and not (state.rules.limited and jobs):
                state.dirty = False
            if not jobs:
                continue
            claimed = [job for job in jobs if isinstance(job, RunningJob)]
            assert self._loop is not None and len(claimed) == len(jobs)
            Deadline.arm(claimed, self._loop)
            since = self._time()
            for job in claimed:
                self._start(job, state, since)
        self._share_slots(self._time())  # a queue that wanted slots may want none now
        if self._waiting and not self._stopping.is_set():
            self._begin_waiting()

    async def _follow_policy(self, state: _QueueState) -> bool:
        """Bring jobs sent with the queue's previous policy in line (a send that raced a
        policy change); True if any changed."""
        name = state.name
        try:
            changed: int = await self._run(self._core.follow_queue_policy(name))
        except PgQueueError:
            return False
        if changed:
            log.warning(
                "queue %s: %d jobs sent while its policy changed kept the old one; they "
                "follow the queue's policy now",
                name,
                changed,
            )
        return changed > 0

    def _make_job(self, row: tuple[Any, ...]) -> RunningJob:
        job = RunningJob.from_values(row)
        assert isinstance(job, RunningJob)
        job._owner = self
        return job

    def progress_reported(self) -> None:
        """A run reported progress: store it soon (safe from a handler's thread)."""
        loop = self._loop
        if loop is not None:
            if in_other_thread(loop):
                loop.call_soon_threadsafe(self._heartbeat_loop.wake.set)
            else:
                self._heartbeat_loop.wake.set()

    # -- running -----------------------------------------------------------------------------

    def _start(self, job: RunningJob, state: _QueueState, since: float) -> None:
        """Hold a claimed job: run it if a slot is free, else it waits for one (from
        ``since``)."""
        earlier = self._active.get(job.id)
        if earlier is not None:  # the job was taken from that run and came back to us
            log.warning(
                "job %s (%s): attempt %d lost the job to attempt %d; stopping it",
                job.id,
                job.name,
                earlier.attempt,
                job.attempt,
            )
            earlier.interrupt()
        self._active[job.id] = job
        job._slot = state
        self._heartbeat_loop.arrived(job)
        if self._startable(state) > 0:
            self._begin(job, state)
        else:
            state.waiting.append((since, job))
            self._waiting += 1

    def _hand_back_late(self, now: float) -> None:
        """Hand back the jobs claimed ahead that have waited _PREFETCH_WAIT for a slot."""
        for state in self._states.values():
            late: list[RunningJob] = []
            while state.waiting and state.waiting[0][0] + _PREFETCH_WAIT <= now:
                late.append(state.waiting.popleft()[1])
            if late:
                self._waiting -= len(late)
                self._give_back(state, late)

    def _give_back(self, state: _QueueState, jobs: list[RunningJob]) -> None:
        """Release jobs claimed ahead that waited too long for a slot (no longer in the
        queue's waiting line), for any worker to take; the queue's runs are slow now, so
        it is not claimed ahead again until short runs bring its average down."""
        state.run_time = max(state.run_time, _PREFETCH_WAIT)
        for job in jobs:
            job._slot = None
            Deadline.release(job)
            if self._active.get(job.id) is job:
                del self._active[job.id]
        log.info(
            "queue %s: handing back %d jobs claimed ahead that waited too long for a slot",
            state.name,
            len(jobs),
        )
        task = asyncio.create_task(self._release_ahead([(j.id, j.run_id) for j in jobs]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _release_ahead(self, runs: list[tuple[int, int | None]]) -> None:
        try:
            await write_apart(self._release, runs, self._release_refused)
        except PgQueueError as exc:
            log.warning(
                "handing back jobs claimed ahead failed (%s): they run again once their "
                "heartbeat lapses",
                exc,
            )

    def _begin(self, job: RunningJob, state: _QueueState) -> None:
        state.active += 1
        self._running += 1
        if not state.definition.is_async:
            self._sync_active += 1
        task = asyncio.create_task(self._execute(job, state))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _begin_waiting(self) -> None:
        """Start held jobs that wait for a slot, while slots are free: one job of each queue
        in turn (from a starting point that moves on each time), and while queues without
        held jobs want slots (they are dirty), none beyond the queue's equal share of the
        slots, so that the slots a queue's runs free go round. A job whose time ran out
        while it waited never started: it goes back instead."""
        lines = [s for s in self._states.values() if s.waiting]
        start = self._next_turn() % len(lines) if lines else 0
        lines = lines[start:] + lines[:start]
        late: dict[str, list[RunningJob]] = {}
        while lines:
            going = []
            for state in lines:
                if not state.waiting or self._startable(state) <= 0:
                    continue
                self._waiting -= 1
                _, job = state.waiting.popleft()
                if job._expired:
                    late.setdefault(state.name, []).append(job)
                else:
                    self._begin(job, state)
                going.append(state)
            lines = going
        for name, jobs in late.items():
            self._give_back(self._states[name], jobs)

    def _share_slots(self, now: float) -> None:
        """Set the share of the slots a queue may fill while other queues want slots too:
        an equal part for each queue that holds jobs waiting for a slot or may have
        runnable jobs it could run (its own limit and the threads allow one more)."""
        contenders = sum(
            1
            for s in self._states.values()
            if s.waiting
            or (
                self._wants_slots(s, now)
                and s.active < s.limit
                and (s.definition.is_async or self._sync_active < self._threads)
            )
        )
        self._share = -(-self._concurrency // max(contenders, 1))

    def _startable(self, state: _QueueState) -> int:
        """Runs of the queue that may start now: its free slots, within its share."""
        return min(self._free(state), self._share - state.active)

    def _wants_slots(self, state: _QueueState, now: float) -> bool:
        """Whether the queue may have runnable jobs and would claim them now."""
        return state.dirty and not state.rules.paused and state.retry_at <= now

    def _next_turn(self) -> int:
        self._turn += 1
        return self._turn

    async def _execute(self, job: RunningJob, state: _QueueState) -> None:
        began = self._time()
        observer = self._observer
        seen = None if observer is None else observer.run_started(job)
        outcome: Outcome | None = None
        try:
            outcome = await self._executor.run(job, state.definition)
            if job._slot is None:  # let go of earlier: see _let_go
                log.warning(
                    "job %s (%s): the handler that ignored cancellation returned; "
                    "its outcome is dropped",
                    job.id,
                    job.name,
                )
            elif outcome is not None:
                self._completer.add(outcome)
            else:  # cancelled, or cut short by the stop (then handed back)
                self._keep_logs(job)
                if self._stopping.is_set():
                    self._interrupted.append(job)
            self.processed += 1
            state.run_time += (self._time() - began - state.run_time) * 0.1
        except asyncio.CancelledError:  # cancelled before its handler started
            self._interrupted.append(job)  # released on shutdown
        except Exception as exc:  # a bug in pgqueue, not in the handler
            log.exception("running job %s failed unexpectedly", job.id)
            if job._slot is not None:
                outcome = Outcome.error(job, "failed", exc)
                self._completer.add(outcome)
        finally:
            if observer is not None:
                observer.run_ended(job, seen, outcome)
            self._end(job)

    def _end(self, job: RunningJob) -> None:
        """The run no longer takes a slot (once, whichever way it ended)."""
        state: _QueueState | None = job._slot
        if state is None:
            return
        job._slot = None
        Deadline.release(job)
        held = self._active.pop(job.id, None)
        if held is not None and held is not job:  # a newer run of the same job
            self._active[job.id] = held
        state.active -= 1
        self._running -= 1
        if not state.definition.is_async:
            self._sync_active -= 1
        if state.rules.take_turns:  # its slot frees once the outcome is written: claim then
            state.retry_at = max(state.retry_at, self._time() + _LIMITED_RETRY)
        if self._waiting and not self._stopping.is_set():
            self._begin_waiting()
        self._wake.set()

    def interrupted(self, job: RunningJob) -> None:
        """A run was asked to stop: if an async handler ignores that, let it go (a sync
        handler's thread is given up on at once)."""
        state: _QueueState | None = job._slot
        if state is not None and state.definition.is_async:
            assert self._loop is not None
            self._loop.call_later(CANCEL_GRACE, self._let_go, job)

    def _let_go(self, job: RunningJob) -> None:
        task = job._task
        if job._slot is None or task is None or task.done():
            return
        log.error(
            "job %s (%s): its handler ignored cancellation for %gs; the worker lets "
            "it go (it runs on, its slot is free, whatever it returns is dropped)",
            job.id,
            job.name,
            CANCEL_GRACE,
        )
        if job._expired:
            message = (
                f"job ran past its expire_in of {job.expire_in:g}s and its handler ignored "
                "cancellation"
            )
            expired = Outcome.error(job, "expired", {"type": "expired", "message": message})
            self._completer.add(dataclasses.replace(expired, logs=job.take_logs()))
        else:
            self._keep_logs(job)
            if self._stopping.is_set():
                self._interrupted.append(job)
        self._tasks.discard(task)  # a stop does not wait for it either
        self._end(job)

    def _keep_logs(self, job: RunningJob) -> None:
        """Store what a run cut short logged (written before the stop hands it back)."""
        logged = Outcome.logged(job)
        if logged is not None:
            self._completer.add(logged)

    async def _release(self, runs: list[tuple[int, int | None]]) -> list[int]:
        released: list[int] = await self._run(
            self._core.release([i for i, _ in runs], [r for _, r in runs])
        )
        return released

    async def _release_refused(self, run: tuple[int, int | None], error: PgQueueError) -> list[int]:
        log.error(
            "job %s: the database refused handing it back (%s); it runs again once "
            "its heartbeat lapses",
            run[0],
            error,
        )
        return []

    async def _shutdown(self) -> None:
        """Let active jobs finish up to the timeout, then hand the rest back."""
        if self._tasks:
            log.info(
                "waiting up to %gs for %d active jobs", self._shutdown_timeout, len(self._tasks)
            )
            await asyncio.wait(set(self._tasks), timeout=max(self._shutdown_timeout, 0.001))
        unfinished = list(self._active.values())
        for job in unfinished:
            job.interrupt()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=1.0)
        # What cannot be written within a few seconds (the database is out of reach) is
        # given up: those jobs run again once they expire.
        try:
            await asyncio.wait_for(self._completer.flush(), _SHUTDOWN_WRITES)
        except asyncio.TimeoutError:
            log.error(
                "stopping without recording %d outcomes: the database did not take them in %gs",
                self._completer.pending,
                _SHUTDOWN_WRITES,
            )
        # Every run the database still counts as this worker's: those unfinished, those a
        # second signal cut short while the wait above ran, and any whose claim's reply
        # was lost. A job cancelled with cancel(id) is no longer active: release skips it.
        known = {(j.id, j.run_id) for j in [*unfinished, *self._interrupted]}
        try:
            runs = set(
                await asyncio.wait_for(
                    _retrying(lambda: self._run(self._core.held_by(self.id))), _SHUTDOWN_WRITES
                )
            )
        except (asyncio.TimeoutError, PgQueueError):
            runs = known
        if runs:
            try:
                released = await asyncio.wait_for(
                    _retrying(
                        lambda: write_apart(self._release, list(runs), self._release_refused)
                    ),
                    _SHUTDOWN_WRITES,
                )
            except (asyncio.TimeoutError, PgQueueError) as exc:
                log.error(
                    "stopping without handing back %d jobs (%s): they run again once they expire",
                    len(runs),
                    exc or "timed out",
                )
            else:
                log.info("released %d unfinished jobs for another worker", len(released))


def select_handlers(
    definitions: list[JobDefinition], queues: list[str] | None
) -> list[JobDefinition]:
    """The handlers a worker (or a drain) runs: all of ``definitions``, or those of
    ``queues``, each a queue's name or a glob pattern (``*``, ``?``, ``[...]``, as
    :func:`fnmatch.fnmatchcase`; queue names hold none of these) that selects every handler
    whose queue name it matches. One that selects no handler is refused (a typo would leave
    jobs unworked), and so is running no handler at all."""
    if queues is not None:
        if isinstance(queues, str) or not all(isinstance(q, str) for q in queues):
            raise InvalidOptionError(f"queues must be a list of queue names, got {queues!r}")
        definitions = _matching(definitions, queues)
    if not definitions:
        raise WorkerError("no job handlers registered: decorate functions with @pq.job")
    return definitions


def _matching(definitions: list[JobDefinition], queues: list[str]) -> list[JobDefinition]:
    names = {d.name for d in definitions}
    unmatched = [q for q in queues if not any(fnmatchcase(n, q) for n in names)]
    if unmatched:
        raise WorkerError(
            f"no handler registered for {', '.join(sorted(unmatched))}"
            f" (registered: {', '.join(sorted(names)) or 'none'})"
        )
    return [d for d in definitions if any(fnmatchcase(d.name, q) for q in queues)]


async def _retrying(call: Callable[[], Awaitable[list[R]]], attempts: int = 5) -> list[R]:
    delay = 0.1
    for attempt in range(attempts):
        try:
            return await call()
        except PgQueueError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(delay)
            delay *= 2
    return []


def _seconds(name: str, value: object, least: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not least <= value <= MAX_SECONDS  # NaN fails this too
    ):
        raise InvalidOptionError(
            f"{name} must be a number of seconds from {least:g} to {MAX_SECONDS}, got {value!r}"
        )
    return float(value)


def _breaks_a_policy(error: PgQueueError) -> bool:
    """Whether the database refused a write for breaking a policy's unique index."""
    cause = error.__cause__
    return isinstance(cause, psycopg.errors.UniqueViolation) and (
        cause.diag.constraint_name or ""
    ).startswith("job_policy_")
