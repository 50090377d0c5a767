"""The application objects: :class:`AsyncPgQueue` and its blocking twin :class:`PgQueue`.

Both are thin: every method validates nothing itself and runs a plan from :mod:`pgqueue.core`
on a pooled connection, or on the caller's connection (``conn=``), inside the caller's
transaction. A test checks that the two surfaces have the same methods and signatures.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from .config import check_schema, describe_dsn, resolve_dsn
from .core import Core, encode_json, error_output, job_runs
from .cron import check_cron, check_timezone
from .db import Plan, connect_error, run_async, run_sync
from .embedded import EmbeddedServer, start_embedded
from .errors import InvalidInputError, PgQueueError, WorkerError
from .maintenance import (
    MaintenanceResult,
    MaintenanceSettings,
    Periodic,
    Ticker,
    maintain_plan,
)
from .migrate import MigrationStatus, migrate_plan, status_plan
from .models import Job, JobState, QueueInfo, QueueStats, ScheduleInfo
from .registry import JobFunction, Registry
from .sql import Statements
from .worker import DEFAULT_HEARTBEAT, Worker, run_loop

__all__ = ["AsyncPgQueue", "PgQueue"]

log = logging.getLogger("pgqueue")
T = TypeVar("T")
P = ParamSpec("P")
R = TypeVar("R")
StartAfter = datetime | timedelta | float | int


class _Common:
    """Configuration and state shared by both flavours."""

    def __init__(
        self,
        dsn: str | None,
        *,
        schema: str,
        migrate: bool,
        pool_min_size: int,
        pool_max_size: int,
        connect_timeout: float,
        maintenance: MaintenanceSettings | bool,
    ) -> None:
        self.schema = check_schema(schema)
        self._dsn = resolve_dsn(dsn)
        if pool_min_size < 0 or pool_max_size < max(1, pool_min_size):
            raise InvalidInputError(
                f"pool sizes must satisfy 0 <= pool_min_size <= pool_max_size and "
                f"pool_max_size >= 1, got {pool_min_size} and {pool_max_size}"
            )
        self._migrate = migrate
        self._pool_min_size = pool_min_size
        self._pool_max_size = pool_max_size
        self._connect_timeout = connect_timeout
        self._embedded: EmbeddedServer | None = None
        if maintenance is True:
            maintenance = MaintenanceSettings()
        self.maintenance_settings: MaintenanceSettings = maintenance or MaintenanceSettings()
        self._run_maintenance = maintenance is not False
        self.sql = Statements(self.schema)
        self._core = Core(self.sql, Registry())
        self._monitors: list[Callable[[list[QueueStats]], object]] = []
        self._monitored_at = time.monotonic()  # the first report comes one interval in
        self._code_schedules: dict[str, tuple[str, str, Any, dict[str, Any]]] = {}
        self._schedules_synced = True
        self._worker: Worker | None = None
        self._work_done = threading.Event()
        self._work_done.set()

    @property
    def registry(self) -> Registry:
        """The handlers registered with ``@pq.job`` and ``@pq.cron``."""
        return self._core.registry

    @registry.setter
    def registry(self, registry: Registry) -> None:
        self._core.registry = registry

    @property
    def dsn(self) -> str | None:
        """The DSN in use (None before ``start()`` when the embedded server is the default)."""
        return self._dsn

    def _resolve_embedded(self) -> str:
        if self._dsn is None:
            self._embedded = start_embedded()
            self._dsn = self._embedded.dsn
        return self._dsn

    def _stop_embedded(self) -> None:
        if self._embedded is not None:
            self._embedded.stop()
            self._embedded = None
            self._dsn = None

    def _setup(self, dsn: str) -> list[int]:
        """Check the server answers and migrate (blocking)."""
        try:
            conn = psycopg.connect(
                dsn, autocommit=True, connect_timeout=max(1, round(self._connect_timeout))
            )
        except psycopg.Error as exc:
            raise connect_error(dsn, exc) from exc
        with conn:
            applied = run_sync(conn, migrate_plan(self.sql)) if self._migrate else []
        if applied:
            log.info("migrated schema %s to version %s", self.schema, applied[-1])
        log.debug("connected to %s", describe_dsn(dsn))
        return applied

    def job(
        self,
        name: str,
        *,
        description: str | None = None,
        concurrency: int | None = None,
        **defaults: Any,
    ) -> Callable[[Callable[P, R]], JobFunction[P, R]]:
        """Register the decorated function (sync or async) as the handler of queue ``name``.

        ``defaults`` are queue options (retry_limit, expire_in, ...; the queue is created or
        updated with them on start) and send options (priority, singleton_key, ...) that
        ``.send()`` uses when the caller leaves them out. ``concurrency`` caps how many of
        these jobs one worker runs at once. A data parameter annotated with a pydantic model
        is validated on ``.send()`` and parsed before the handler runs; a parameter annotated
        ``Job`` (or named ``job``) receives the running job.
        """

        def register(func: Callable[P, R]) -> JobFunction[P, R]:
            definition = self.registry.register(
                name, func, description=description, concurrency=concurrency, options=defaults
            )
            return JobFunction(self, definition)

        return register

    def cron(
        self,
        expression: str,
        *,
        name: str | None = None,
        tz: str = "UTC",
        data: Any = None,
        description: str | None = None,
        **options: Any,
    ) -> Callable[[Callable[P, R]], JobFunction[P, R]]:
        """Register the decorated function as a job (queue ``name``, default the function's
        name) and send it ``data`` at every slot of the cron ``expression`` in time zone
        ``tz``. Schedules declared in code are written on start; code schedules no longer
        declared are then deleted. Bad expressions or zones raise InvalidScheduleError here.
        """
        check_cron(expression)
        check_timezone(tz)

        def register(func: Callable[P, R]) -> JobFunction[P, R]:
            queue: str = name or str(getattr(func, "__name__", ""))
            job = self.job(queue, description=description, **options)(func)
            send_options = dict(job.definition.send_options)
            # Validate data and options now, not at start().
            self._core.schedule_params(queue, expression, data, tz, send_options, True)
            self._code_schedules[queue] = (expression, tz, data, send_options)
            self._schedules_synced = False
            return job

        return register

    def add_monitor(self, callback: Callable[[list[QueueStats]], object]) -> None:
        """Hand every queue's stats to ``callback`` each ``monitor_interval`` seconds, from
        the instance's periodic runner (the stats are logged at INFO as well)."""
        self._monitors.append(callback)

    def _maintenance_plan(self, *, periodic: bool = False) -> Plan[MaintenanceResult]:
        return maintain_plan(self._core, self.maintenance_settings, periodic=periodic)

    def _monitor_due(self) -> bool:
        # Counting every job is a scan of the table: only for someone who will look.
        if not self._monitors and not log.isEnabledFor(logging.INFO):
            return False
        now = time.monotonic()
        if now - self._monitored_at < self.maintenance_settings.monitor_interval:
            return False
        self._monitored_at = now
        return True

    def _report(self, stats: list[QueueStats]) -> None:
        for queue in stats:
            log.info(
                "queue %s: %d waiting, %d active, %d failed, oldest waiting %s s",
                queue.name,
                queue.waiting,
                queue.active,
                queue.counts[JobState.failed],
                "-"
                if queue.oldest_waiting_seconds is None
                else f"{queue.oldest_waiting_seconds:.0f}",
            )
        for callback in self._monitors:
            try:
                callback(stats)
            except Exception:
                log.exception("queue monitor %r failed", callback)

    def _declared(self) -> bool:
        """True when every handler's queue and every code schedule is in the database."""
        return self._schedules_synced and not self.registry.has_undeclared

    def _code_schedule_plan(self) -> Plan[None] | None:
        """The plan writing the code schedules, if they changed since they were written."""
        if self._schedules_synced:
            return None
        rows = [
            self._core.schedule_params(name, cron, data, tz, options, True)
            for name, (cron, tz, data, options) in self._code_schedules.items()
        ]
        return self._core.sync_code_schedules(rows)

    def _schedule_params(
        self, name: str, cron: str, data: Any, tz: str, options: dict[str, Any]
    ) -> dict[str, Any]:
        return self._core.schedule_params(name, cron, data, tz, options, False)

    def _worker_for(self, queue: AsyncPgQueue, **options: Any) -> Worker:
        if not self._work_done.is_set():
            raise WorkerError("this queue object is already working")
        worker = Worker(queue, **options)
        self._worker = worker
        self._work_done.clear()
        return worker

    def _stop_worker(self) -> None:
        if self._worker is not None:
            self._worker.stop()

    @staticmethod
    def _outputs(ids: list[int], output: Any) -> list[str | None]:
        text = encode_json(output, "output")
        return [text] * len(ids)

    @staticmethod
    def _progress(ids: list[int], progress: Any) -> list[str | None]:
        text = None if progress is None else encode_json(progress, "progress")
        return [text] * len(ids)

    @staticmethod
    def _send_options(options: dict[str, Any], start_after: StartAfter) -> dict[str, Any]:
        options["start_after"] = start_after
        return options


class AsyncPgQueue(_Common):
    """A job queue in PostgreSQL, for asyncio code.

    The database is ``dsn``, else ``$PGQUEUE_DATABASE_URL``, else an embedded PostgreSQL.
    Use ``async with AsyncPgQueue(...) as pq:`` or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        schema: str = "pgqueue",
        migrate: bool = True,
        pool_min_size: int = 1,
        pool_max_size: int = 10,
        connect_timeout: float = 10.0,
        maintenance: MaintenanceSettings | bool = True,
    ) -> None:
        super().__init__(
            dsn,
            schema=schema,
            migrate=migrate,
            pool_min_size=pool_min_size,
            pool_max_size=pool_max_size,
            connect_timeout=connect_timeout,
            maintenance=maintenance,
        )
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None
        self._maintenance: Periodic | None = None
        self._declare_lock = asyncio.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> AsyncPgQueue:
        """Connect (starting the embedded server if no DSN is set), migrate, open the pool."""
        if self._pool is not None:
            return self
        dsn = (
            self._dsn if self._dsn is not None else await asyncio.to_thread(self._resolve_embedded)
        )
        try:
            await asyncio.to_thread(self._setup, dsn)
            pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
                dsn,
                min_size=self._pool_min_size,
                max_size=self._pool_max_size,
                open=False,
                name=f"pgqueue.{self.schema}",
                kwargs={"autocommit": True},
            )
            await pool.open(wait=True, timeout=self._connect_timeout)
            self._pool = pool
            await self._declare_queues()
            if self._run_maintenance:
                self._maintenance = Periodic(
                    f"pgqueue-maintenance-{self.schema}",
                    self.maintenance_settings.interval,
                    self._background_tick,
                )
                await self._maintenance.start()
        except BaseException:
            opened, self._pool = self._pool, None
            if opened is not None:
                await opened.close()
            await asyncio.to_thread(self._stop_embedded)
            raise
        return self

    async def _declare_queues(self) -> None:
        """Create or update the queues of handlers registered since the last call, and write
        the schedules declared in code. A caller arriving meanwhile waits for it, so no job
        is sent to a queue whose declaration is under way."""
        if self._declared():
            return
        async with self._declare_lock:
            if self._pool is None:
                return
            pending = self.registry.undeclared()
            if pending:
                async with self._pool.connection() as conn, conn.transaction():
                    await run_async(conn, self._core.declare_queues(pending))
                self.registry.declared(pending)
            if (schedules := self._code_schedule_plan()) is not None:
                async with self._pool.connection() as conn, conn.transaction():
                    await run_async(conn, schedules)
                self._schedules_synced = True

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop working (if :meth:`work` runs), close the pool, stop an embedded server this
        object started. Idempotent."""
        self._stop_worker()
        await asyncio.to_thread(self._work_done.wait, timeout)
        maintenance, self._maintenance = self._maintenance, None
        if maintenance is not None:
            await maintenance.stop()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close(timeout=timeout)
        await asyncio.to_thread(self._stop_embedded)

    async def __aenter__(self) -> AsyncPgQueue:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _run(
        self, plan: Plan[T], conn: psycopg.AsyncConnection[Any] | None, atomic: bool = True
    ) -> T:
        """Run a plan on ``conn``, else on a pooled connection: in one transaction when
        ``atomic`` (plans of one statement pass False and save two round trips)."""
        if conn is not None:
            if not isinstance(conn, psycopg.AsyncConnection):
                plan.close()
                raise InvalidInputError(
                    "AsyncPgQueue needs a psycopg.AsyncConnection for conn= "
                    "(use PgQueue with a sync connection)"
                )
            await self._declare_queues()
            return await run_async(conn, plan)
        if self._pool is None:
            plan.close()
            raise PgQueueError("AsyncPgQueue is not started: call start() or pass conn=")
        try:
            await self._declare_queues()
            async with self._pool.connection() as pooled:
                if not atomic:
                    return await run_async(pooled, plan)
                async with pooled.transaction():
                    return await run_async(pooled, plan)
        except psycopg.OperationalError as exc:
            raise connect_error(self._dsn or "", exc) from exc

    async def work(
        self,
        *,
        queues: list[str] | None = None,
        concurrency: int = 10,
        poll_interval: float = 2.0,
        shutdown_timeout: float = 30.0,
        until_empty: bool = False,
        install_signal_handlers: bool = False,
        heartbeat_seconds: float = DEFAULT_HEARTBEAT,
    ) -> None:
        """Run the registered handlers until :meth:`stop` (or, with ``until_empty``, until no
        job is runnable). ``queues`` limits the handlers run; ``concurrency`` caps the jobs
        run at once; runs beat every ``heartbeat_seconds`` / 3 and count as dead after
        ``heartbeat_seconds`` of silence (unless their job sets ``heartbeat_seconds``)."""
        if self._pool is None:
            raise PgQueueError("AsyncPgQueue is not started: call start() first")
        worker = self._worker_for(
            self, queues=queues, concurrency=concurrency, poll_interval=poll_interval,
            shutdown_timeout=shutdown_timeout, until_empty=until_empty,
            heartbeat_seconds=heartbeat_seconds,
        )
        try:
            await worker.run(install_signal_handlers)
        finally:
            self._worker = None
            self._work_done.set()

    # -- schema ------------------------------------------------------------------------------

    async def migrate(self) -> list[int]:
        """Apply pending migrations now; returns the versions applied."""
        dsn = (
            self._dsn if self._dsn is not None else await asyncio.to_thread(self._resolve_embedded)
        )
        migrate, self._migrate = self._migrate, True
        try:
            return await asyncio.to_thread(self._setup, dsn)
        finally:
            self._migrate = migrate

    async def migration_status(
        self, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> MigrationStatus:
        """The schema's version and the migrations still pending."""
        return await self._run(status_plan(self.sql), conn)

    async def maintain(self) -> MaintenanceResult:
        """Run one maintenance pass now: expire, archive, delete (skipped, returning
        ``ran=False``, while another instance runs one)."""
        return await self._run(self._maintenance_plan(), None)

    # -- producing ---------------------------------------------------------------------------

    async def send(
        self,
        name: str,
        data: Any = None,
        *,
        conn: psycopg.AsyncConnection[Any] | None = None,
        **options: Any,
    ) -> int | None:
        """Send a job; returns its id, or None when a singleton or policy blocked it."""
        return await self._run(self._core.send(name, data, options), conn, atomic=False)

    async def send_after(
        self,
        name: str,
        data: Any,
        start_after: StartAfter,
        *,
        conn: psycopg.AsyncConnection[Any] | None = None,
        **options: Any,
    ) -> int | None:
        """Send a job that starts after a datetime, a timedelta or a number of seconds."""
        options = self._send_options(options, start_after)
        return await self._run(self._core.send(name, data, options), conn, atomic=False)

    async def insert(
        self,
        jobs: Iterable[Mapping[str, Any]],
        *,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[int | None]:
        """Send many jobs in one statement (mappings of ``name``, ``data`` and options)."""
        return await self._run(self._core.insert_many(jobs), conn, atomic=False)

    # -- consuming ---------------------------------------------------------------------------

    async def fetch(
        self,
        name: str,
        batch_size: int = 1,
        *,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[Job]:
        """Claim up to ``batch_size`` jobs of a queue (they become active)."""
        return await self._run(self._core.fetch(name, batch_size, None), conn)

    async def complete(
        self,
        jobs: Job | int | Iterable[Job | int],
        output: Any = None,
        *,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[int]:
        """Complete the runs of jobs from :meth:`fetch` with ``output``; returns the ids
        completed. A run that no longer holds its job (it expired and was claimed again,
        or was cancelled) changes nothing and is left out. A bare id completes whichever
        run holds the job now: pass the fetched ``Job`` to be safe."""
        ids, runs = job_runs(jobs)
        return await self._run(
            self._core.complete(ids, runs, self._outputs(ids, output)), conn, atomic=False
        )

    async def fail(
        self,
        jobs: Job | int | Iterable[Job | int],
        error: Any = None,
        *,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[int]:
        """Fail the runs of fetched jobs: each job goes to retry while retries remain, else
        to failed; returns the ids failed (a run that lost its job is left out, as in
        :meth:`complete`)."""
        ids, runs = job_runs(jobs)
        return await self._run(
            self._core.fail(ids, runs, self._outputs(ids, error_output(error))),
            conn,
            atomic=False,
        )

    async def touch(
        self,
        jobs: Job | int | Iterable[Job | int],
        progress: Any = None,
        *,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[int]:
        """Heartbeat the runs of fetched jobs (and store ``progress`` unless None); returns
        the ids of the runs that still hold their jobs."""
        ids, runs = job_runs(jobs)
        return await self._run(
            self._core.touch(ids, runs, self._progress(ids, progress)), conn, atomic=False
        )

    # -- jobs --------------------------------------------------------------------------------

    async def cancel(
        self, ids: int | Iterable[int], *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> list[int]:
        """Cancel waiting or active jobs; returns the ids cancelled."""
        return await self._run(self._core.cancel(ids), conn)

    async def resume(
        self, ids: int | Iterable[int], *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> list[int]:
        """Send cancelled jobs back to ``created``; returns the ids resumed."""
        return await self._run(self._core.resume(ids), conn)

    async def retry(
        self, ids: int | Iterable[int], *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> list[int]:
        """Send failed or expired jobs back to ``retry``, to run again at once (with one more
        retry allowed if they had used theirs); returns the ids retried."""
        return await self._run(self._core.retry(ids), conn)

    async def delete_job(
        self, ids: int | Iterable[int], *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> list[int]:
        """Delete jobs, wherever they are (job table or archive); returns the ids deleted."""
        return await self._run(self._core.delete_job(ids), conn)

    async def get_job_by_id(
        self, id: int, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> Job | None:
        """A job by id, looking in the archive too; None if there is none."""
        return await self._run(self._core.get_job_by_id(id), conn)

    # -- queues ------------------------------------------------------------------------------

    async def create_queue(
        self, name: str, *, conn: psycopg.AsyncConnection[Any] | None = None, **options: Any
    ) -> bool:
        """Create a queue with default job options; False if it already existed."""
        return await self._run(self._core.create_queue(name, options), conn)

    async def update_queue(
        self, name: str, *, conn: psycopg.AsyncConnection[Any] | None = None, **options: Any
    ) -> None:
        """Change the given options of a queue (``None`` clears one)."""
        await self._run(self._core.update_queue(name, options), conn)

    async def delete_queue(
        self, name: str, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> bool:
        """Delete a queue and its jobs; False if there was no such queue."""
        return await self._run(self._core.delete_queue(name), conn)

    async def get_queue(
        self, name: str, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> QueueInfo | None:
        """A queue's settings, or None."""
        return await self._run(self._core.get_queue(name), conn)

    async def get_queues(
        self, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> list[QueueInfo]:
        """Every queue, by name."""
        return await self._run(self._core.get_queues(), conn)

    # -- throttling, pub/sub -----------------------------------------------------------------

    async def send_throttled(
        self,
        name: str,
        data: Any,
        seconds: int,
        key: str | None = None,
        *,
        conn: psycopg.AsyncConnection[Any] | None = None,
        **options: Any,
    ) -> int | None:
        """Send at most one job per ``seconds``-long window (per ``key``); extras return None."""
        options.update(singleton_seconds=seconds, singleton_key=key)
        return await self._run(self._core.send(name, data, options), conn, atomic=False)

    async def send_debounced(
        self,
        name: str,
        data: Any,
        seconds: int,
        key: str | None = None,
        *,
        conn: psycopg.AsyncConnection[Any] | None = None,
        **options: Any,
    ) -> int | None:
        """Like :meth:`send_throttled`, but a send into a taken window goes to the next one
        (which then starts when that window opens); None when both are taken."""
        options.update(singleton_seconds=seconds, singleton_key=key, singleton_next_slot=True)
        return await self._run(self._core.send(name, data, options), conn, atomic=False)

    async def subscribe(
        self, event: str, queue: str, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> bool:
        """Deliver every job published as ``event`` to ``queue`` too."""
        return await self._run(self._core.subscribe(event, queue), conn)

    async def unsubscribe(
        self, event: str, queue: str, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> bool:
        """Stop delivering ``event`` to ``queue``."""
        return await self._run(self._core.unsubscribe(event, queue), conn)

    async def get_subscriptions(
        self, event: str | None = None, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> list[tuple[str, str]]:
        """(event, queue) pairs, of one event or of all."""
        return await self._run(self._core.subscriptions(event), conn)

    async def publish(
        self,
        event: str,
        data: Any = None,
        *,
        conn: psycopg.AsyncConnection[Any] | None = None,
        **options: Any,
    ) -> list[int]:
        """Send one job to every queue subscribed to ``event``, in one statement (inside the
        caller's transaction with ``conn``); returns their ids."""
        return await self._run(self._core.publish(event, data, options), conn, atomic=False)

    # -- queue management --------------------------------------------------------------------

    async def pause_queue(
        self, name: str, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> None:
        """Stop workers claiming jobs of ``name``; sending still works."""
        await self._run(self._core.set_paused(name, True), conn)

    async def resume_queue(
        self, name: str, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> None:
        """Let workers claim jobs of ``name`` again."""
        await self._run(self._core.set_paused(name, False), conn)

    async def purge_queue(
        self, name: str, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> int:
        """Delete the jobs of ``name`` that wait to run; returns how many."""
        return await self._run(self._core.purge_queue(name), conn)

    async def redrive(
        self,
        dead_letter: str,
        *,
        limit: int = 10_000,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[int]:
        """Send up to ``limit`` jobs waiting in dead-letter queue ``dead_letter`` back to the
        queues they failed in, as new jobs; returns the new ids."""
        return await self._run(self._core.redrive(dead_letter, limit), conn)

    async def get_queue_stats(
        self, name: str | None = None, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> list[QueueStats]:
        """Job counts per state and the oldest waiting job's age, of one queue or of all."""
        return await self._run(self._core.queue_stats(name), conn)

    # -- schedules ---------------------------------------------------------------------------

    async def schedule(
        self,
        name: str,
        cron: str,
        data: Any = None,
        *,
        tz: str = "UTC",
        conn: psycopg.AsyncConnection[Any] | None = None,
        **options: Any,
    ) -> None:
        """Send ``data`` to queue ``name`` at every slot of ``cron`` (in time zone ``tz``),
        once per slot however many instances run. Replaces a schedule of the same name."""
        params = self._schedule_params(name, cron, data, tz, options)
        await self._run(self._core.schedule(params), conn)

    async def unschedule(
        self, name: str, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> bool:
        """Delete the schedule ``name``; False if there was none."""
        return await self._run(self._core.unschedule(name), conn)

    async def get_schedules(
        self, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> list[ScheduleInfo]:
        """Every schedule, by name."""
        return await self._run(self._core.get_schedules(), conn)

    async def run_schedules(self) -> list[int]:
        """Send the jobs of every schedule slot that is due now (started instances do this
        every maintenance interval); returns the ids this call sent. A schedule that cannot
        send its job is logged and tried again next time; the others are sent."""
        sent = []
        for info, slot in await self._run(self._core.due_schedules(), None):
            try:
                job_id = await self._run(self._core.fire_schedule(info, slot), None)
            except PgQueueError as exc:
                log.error("schedule %s could not send its job for %s: %s", info.name, slot, exc)
                continue
            if job_id is not None:
                sent.append(job_id)
        return sent

    async def grant(self, role: str, *, conn: psycopg.AsyncConnection[Any] | None = None) -> None:
        """Grant ``role`` what running pgqueue on this schema takes (sending, working,
        maintenance, cron), for today's tables and those later migrations add; run it as
        the schema's owner. Migrating and moving the clock stay the owner's."""
        await self._run(self._core.grant(role), conn)

    # -- time --------------------------------------------------------------------------------

    async def now(self, *, conn: psycopg.AsyncConnection[Any] | None = None) -> datetime:
        """The time by the schema's clock: the database's, unless a test moved it. Every
        decision about time (start, expiry, heartbeats, retention, cron, throttling) uses it."""
        return await self._run(self._core.now(), conn)

    async def set_clock(self, at: datetime | None) -> None:
        """Set the schema's clock to ``at`` (None: the database's own time again), for every
        instance on the schema. For tests: time then runs on from ``at``."""
        await self._run(self._core.set_clock(at), None)

    async def move_clock(self, by: float | timedelta) -> None:
        """Move the schema's clock by ``by`` seconds or a timedelta, for every instance on
        the schema: for tests, to make delays, retries, expiry and cron happen at once."""
        await self._run(self._core.move_clock(by), None)

    async def _maintain_periodic(self) -> MaintenanceResult:
        return await self._run(self._maintenance_plan(periodic=True), None)

    async def _background_tick(self) -> None:
        # Each step runs even if another failed (cron must not stop because maintenance
        # fails); the first error is raised afterwards, for the runner to log and keep.
        errors: list[Exception] = []
        for step in (self._maintain_periodic, self.run_schedules):
            try:
                await step()
            except Exception as exc:
                errors.append(exc)
        if self._monitor_due():
            self._report(await self.get_queue_stats())
        if errors:
            raise errors[0]


class PgQueue(_Common):
    """A job queue in PostgreSQL, for blocking code: the twin of :class:`AsyncPgQueue`.

    Use ``with PgQueue(...) as pq:`` or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        schema: str = "pgqueue",
        migrate: bool = True,
        pool_min_size: int = 1,
        pool_max_size: int = 10,
        connect_timeout: float = 10.0,
        maintenance: MaintenanceSettings | bool = True,
    ) -> None:
        super().__init__(
            dsn,
            schema=schema,
            migrate=migrate,
            pool_min_size=pool_min_size,
            pool_max_size=pool_max_size,
            connect_timeout=connect_timeout,
            maintenance=maintenance,
        )
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = None
        self._maintenance: Ticker | None = None
        self._declare_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> PgQueue:
        """Connect (starting the embedded server if no DSN is set), migrate, open the pool."""
        if self._pool is not None:
            return self
        dsn = self._dsn or self._resolve_embedded()
        try:
            self._setup(dsn)
            pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
                dsn,
                min_size=self._pool_min_size,
                max_size=self._pool_max_size,
                open=False,
                name=f"pgqueue.{self.schema}",
                kwargs={"autocommit": True},
            )
            pool.open(wait=True, timeout=self._connect_timeout)
            self._pool = pool
            self._declare_queues()
            if self._run_maintenance:
                self._maintenance = Ticker(
                    f"pgqueue-maintenance-{self.schema}",
                    self.maintenance_settings.interval,
                    self._background_tick,
                )
                self._maintenance.start()
        except BaseException:
            opened, self._pool = self._pool, None
            if opened is not None:
                opened.close()
            self._stop_embedded()
            raise
        return self

    def _declare_queues(self) -> None:
        """Create or update the queues of handlers registered since the last call, and write
        the schedules declared in code. A caller arriving meanwhile waits for it, so no job
        is sent to a queue whose declaration is under way."""
        if self._declared():
            return
        with self._declare_lock:
            if self._pool is None:
                return
            pending = self.registry.undeclared()
            if pending:
                with self._pool.connection() as conn, conn.transaction():
                    run_sync(conn, self._core.declare_queues(pending))
                self.registry.declared(pending)
            if (schedules := self._code_schedule_plan()) is not None:
                with self._pool.connection() as conn, conn.transaction():
                    run_sync(conn, schedules)
                self._schedules_synced = True

    def stop(self, timeout: float = 30.0) -> None:
        """Stop working (if :meth:`work` runs), close the pool, stop an embedded server this
        object started. Idempotent."""
        self._stop_worker()
        self._work_done.wait(timeout)
        maintenance, self._maintenance = self._maintenance, None
        if maintenance is not None:
            maintenance.stop()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close(timeout=timeout)
        self._stop_embedded()

    def __enter__(self) -> PgQueue:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self, plan: Plan[T], conn: psycopg.Connection[Any] | None, atomic: bool = True) -> T:
        """Run a plan on ``conn``, else on a pooled connection: in one transaction when
        ``atomic`` (plans of one statement pass False and save two round trips)."""
        if conn is not None:
            if not isinstance(conn, psycopg.Connection):
                plan.close()
                raise InvalidInputError(
                    "PgQueue needs a sync psycopg.Connection for conn= "
                    "(use AsyncPgQueue with an async connection)"
                )
            self._declare_queues()
            return run_sync(conn, plan)
        if self._pool is None:
            plan.close()
            raise PgQueueError("PgQueue is not started: call start() or pass conn=")
        try:
            self._declare_queues()
            with self._pool.connection() as pooled:
                if not atomic:
                    return run_sync(pooled, plan)
                with pooled.transaction():
                    return run_sync(pooled, plan)
        except psycopg.OperationalError as exc:
            raise connect_error(self._dsn or "", exc) from exc

    def work(
        self,
        *,
        queues: list[str] | None = None,
        concurrency: int = 10,
        poll_interval: float = 2.0,
        shutdown_timeout: float = 30.0,
        until_empty: bool = False,
        install_signal_handlers: bool = False,
        heartbeat_seconds: float = DEFAULT_HEARTBEAT,
    ) -> None:
        """Run the registered handlers until :meth:`stop` (or, with ``until_empty``, until no
        job is runnable); blocks. ``queues`` limits the handlers run; ``concurrency`` caps
        the jobs run at once (sync handlers run on that many threads); runs beat every
        ``heartbeat_seconds`` / 3 and count as dead after ``heartbeat_seconds`` of silence
        (unless their job sets ``heartbeat_seconds``)."""
        if self._pool is None or self._dsn is None:
            raise PgQueueError("PgQueue is not started: call start() first")
        # The worker runs on an event loop of its own, with a pool like this object's.
        runner = AsyncPgQueue(
            self._dsn,
            schema=self.schema,
            migrate=False,
            pool_min_size=self._pool_min_size,
            pool_max_size=self._pool_max_size,
            connect_timeout=self._connect_timeout,
            maintenance=False,
        )
        runner.registry = self.registry
        worker = self._worker_for(
            runner, queues=queues, concurrency=concurrency, poll_interval=poll_interval,
            shutdown_timeout=shutdown_timeout, until_empty=until_empty,
            heartbeat_seconds=heartbeat_seconds,
        )

        async def main() -> None:
            async with runner:
                await worker.run(install_signal_handlers)

        try:
            run_loop(main())
        finally:
            self._worker = None
            self._work_done.set()

    # -- schema ------------------------------------------------------------------------------

    def migrate(self) -> list[int]:
        """Apply pending migrations now; returns the versions applied."""
        dsn = self._dsn or self._resolve_embedded()
        migrate, self._migrate = self._migrate, True
        try:
            return self._setup(dsn)
        finally:
            self._migrate = migrate

    def migration_status(self, *, conn: psycopg.Connection[Any] | None = None) -> MigrationStatus:
        """The schema's version and the migrations still pending."""
        return self._run(status_plan(self.sql), conn)

    def maintain(self) -> MaintenanceResult:
        """Run one maintenance pass now: expire, archive, delete (skipped, returning
        ``ran=False``, while another instance runs one)."""
        return self._run(self._maintenance_plan(), None)

    # -- producing ---------------------------------------------------------------------------

    def send(
        self,
        name: str,
        data: Any = None,
        *,
        conn: psycopg.Connection[Any] | None = None,
        **options: Any,
    ) -> int | None:
        """Send a job; returns its id, or None when a singleton or policy blocked it."""
        return self._run(self._core.send(name, data, options), conn, atomic=False)

    def send_after(
        self,
        name: str,
        data: Any,
        start_after: StartAfter,
        *,
        conn: psycopg.Connection[Any] | None = None,
        **options: Any,
    ) -> int | None:
        """Send a job that starts after a datetime, a timedelta or a number of seconds."""
        options = self._send_options(options, start_after)
        return self._run(self._core.send(name, data, options), conn, atomic=False)

    def insert(
        self,
        jobs: Iterable[Mapping[str, Any]],
        *,
        conn: psycopg.Connection[Any] | None = None,
    ) -> list[int | None]:
        """Send many jobs in one statement (mappings of ``name``, ``data`` and options)."""
        return self._run(self._core.insert_many(jobs), conn, atomic=False)

    # -- consuming ---------------------------------------------------------------------------

    def fetch(
        self,
        name: str,
        batch_size: int = 1,
        *,
        conn: psycopg.Connection[Any] | None = None,
    ) -> list[Job]:
        """Claim up to ``batch_size`` jobs of a queue (they become active)."""
        return self._run(self._core.fetch(name, batch_size, None), conn)

    def complete(
        self,
        jobs: Job | int | Iterable[Job | int],
        output: Any = None,
        *,
        conn: psycopg.Connection[Any] | None = None,
    ) -> list[int]:
        """Complete the runs of jobs from :meth:`fetch` with ``output``; returns the ids
        completed. A run that no longer holds its job (it expired and was claimed again,
        or was cancelled) changes nothing and is left out. A bare id completes whichever
        run holds the job now: pass the fetched ``Job`` to be safe."""
        ids, runs = job_runs(jobs)
        return self._run(
            self._core.complete(ids, runs, self._outputs(ids, output)), conn, atomic=False
        )

    def fail(
        self,
        jobs: Job | int | Iterable[Job | int],
        error: Any = None,
        *,
        conn: psycopg.Connection[Any] | None = None,
    ) -> list[int]:
        """Fail the runs of fetched jobs: each job goes to retry while retries remain, else
        to failed; returns the ids failed (a run that lost its job is left out, as in
        :meth:`complete`)."""
        ids, runs = job_runs(jobs)
        return self._run(
            self._core.fail(ids, runs, self._outputs(ids, error_output(error))),
            conn,
            atomic=False,
        )

    def touch(
        self,
        jobs: Job | int | Iterable[Job | int],
        progress: Any = None,
        *,
        conn: psycopg.Connection[Any] | None = None,
    ) -> list[int]:
        """Heartbeat the runs of fetched jobs (and store ``progress`` unless None); returns
        the ids of the runs that still hold their jobs."""
        ids, runs = job_runs(jobs)
        return self._run(
            self._core.touch(ids, runs, self._progress(ids, progress)), conn, atomic=False
        )

    # -- jobs --------------------------------------------------------------------------------

    def cancel(
        self, ids: int | Iterable[int], *, conn: psycopg.Connection[Any] | None = None
    ) -> list[int]:
        """Cancel waiting or active jobs; returns the ids cancelled."""
        return self._run(self._core.cancel(ids), conn)

    def resume(
        self, ids: int | Iterable[int], *, conn: psycopg.Connection[Any] | None = None
    ) -> list[int]:
        """Send cancelled jobs back to ``created``; returns the ids resumed."""
        return self._run(self._core.resume(ids), conn)

    def retry(
        self, ids: int | Iterable[int], *, conn: psycopg.Connection[Any] | None = None
    ) -> list[int]:
        """Send failed or expired jobs back to ``retry``, to run again at once (with one more
        retry allowed if they had used theirs); returns the ids retried."""
        return self._run(self._core.retry(ids), conn)

    def delete_job(
        self, ids: int | Iterable[int], *, conn: psycopg.Connection[Any] | None = None
    ) -> list[int]:
        """Delete jobs, wherever they are (job table or archive); returns the ids deleted."""
        return self._run(self._core.delete_job(ids), conn)

    def get_job_by_id(self, id: int, *, conn: psycopg.Connection[Any] | None = None) -> Job | None:
        """A job by id, looking in the archive too; None if there is none."""
        return self._run(self._core.get_job_by_id(id), conn)

    # -- queues ------------------------------------------------------------------------------

    def create_queue(
        self, name: str, *, conn: psycopg.Connection[Any] | None = None, **options: Any
    ) -> bool:
        """Create a queue with default job options; False if it already existed."""
        return self._run(self._core.create_queue(name, options), conn)

    def update_queue(
        self, name: str, *, conn: psycopg.Connection[Any] | None = None, **options: Any
    ) -> None:
        """Change the given options of a queue (``None`` clears one)."""
        self._run(self._core.update_queue(name, options), conn)

    def delete_queue(self, name: str, *, conn: psycopg.Connection[Any] | None = None) -> bool:
        """Delete a queue and its jobs; False if there was no such queue."""
        return self._run(self._core.delete_queue(name), conn)

    def get_queue(
        self, name: str, *, conn: psycopg.Connection[Any] | None = None
    ) -> QueueInfo | None:
        """A queue's settings, or None."""
        return self._run(self._core.get_queue(name), conn)

    def get_queues(self, *, conn: psycopg.Connection[Any] | None = None) -> list[QueueInfo]:
        """Every queue, by name."""
        return self._run(self._core.get_queues(), conn)

    # -- throttling, pub/sub -----------------------------------------------------------------

    def send_throttled(
        self,
        name: str,
        data: Any,
        seconds: int,
        key: str | None = None,
        *,
        conn: psycopg.Connection[Any] | None = None,
        **options: Any,
    ) -> int | None:
        """Send at most one job per ``seconds``-long window (per ``key``); extras return None."""
        options.update(singleton_seconds=seconds, singleton_key=key)
        return self._run(self._core.send(name, data, options), conn, atomic=False)

    def send_debounced(
        self,
        name: str,
        data: Any,
        seconds: int,
        key: str | None = None,
        *,
        conn: psycopg.Connection[Any] | None = None,
        **options: Any,
    ) -> int | None:
        """Like :meth:`send_throttled`, but a send into a taken window goes to the next one
        (which then starts when that window opens); None when both are taken."""
        options.update(singleton_seconds=seconds, singleton_key=key, singleton_next_slot=True)
        return self._run(self._core.send(name, data, options), conn, atomic=False)

    def subscribe(
        self, event: str, queue: str, *, conn: psycopg.Connection[Any] | None = None
    ) -> bool:
        """Deliver every job published as ``event`` to ``queue`` too."""
        return self._run(self._core.subscribe(event, queue), conn)

    def unsubscribe(
        self, event: str, queue: str, *, conn: psycopg.Connection[Any] | None = None
    ) -> bool:
        """Stop delivering ``event`` to ``queue``."""
        return self._run(self._core.unsubscribe(event, queue), conn)

    def get_subscriptions(
        self, event: str | None = None, *, conn: psycopg.Connection[Any] | None = None
    ) -> list[tuple[str, str]]:
        """(event, queue) pairs, of one event or of all."""
        return self._run(self._core.subscriptions(event), conn)

    def publish(
        self,
        event: str,
        data: Any = None,
        *,
        conn: psycopg.Connection[Any] | None = None,
        **options: Any,
    ) -> list[int]:
        """Send one job to every queue subscribed to ``event``, in one statement (inside the
        caller's transaction with ``conn``); returns their ids."""
        return self._run(self._core.publish(event, data, options), conn, atomic=False)

    # -- queue management --------------------------------------------------------------------

    def pause_queue(self, name: str, *, conn: psycopg.Connection[Any] | None = None) -> None:
        """Stop workers claiming jobs of ``name``; sending still works."""
        self._run(self._core.set_paused(name, True), conn)

    def resume_queue(self, name: str, *, conn: psycopg.Connection[Any] | None = None) -> None:
        """Let workers claim jobs of ``name`` again."""
        self._run(self._core.set_paused(name, False), conn)

    def purge_queue(self, name: str, *, conn: psycopg.Connection[Any] | None = None) -> int:
        """Delete the jobs of ``name`` that wait to run; returns how many."""
        return self._run(self._core.purge_queue(name), conn)

    def redrive(
        self, dead_letter: str, *, limit: int = 10_000, conn: psycopg.Connection[Any] | None = None
    ) -> list[int]:
        """Send up to ``limit`` jobs waiting in dead-letter queue ``dead_letter`` back to the
        queues they failed in, as new jobs; returns the new ids."""
        return self._run(self._core.redrive(dead_letter, limit), conn)

    def get_queue_stats(
        self, name: str | None = None, *, conn: psycopg.Connection[Any] | None = None
    ) -> list[QueueStats]:
        """Job counts per state and the oldest waiting job's age, of one queue or of all."""
        return self._run(self._core.queue_stats(name), conn)

    # -- schedules ---------------------------------------------------------------------------

    def schedule(
        self,
        name: str,
        cron: str,
        data: Any = None,
        *,
        tz: str = "UTC",
        conn: psycopg.Connection[Any] | None = None,
        **options: Any,
    ) -> None:
        """Send ``data`` to queue ``name`` at every slot of ``cron`` (in time zone ``tz``),
        once per slot however many instances run. Replaces a schedule of the same name."""
        params = self._schedule_params(name, cron, data, tz, options)
        self._run(self._core.schedule(params), conn)

    def unschedule(self, name: str, *, conn: psycopg.Connection[Any] | None = None) -> bool:
        """Delete the schedule ``name``; False if there was none."""
        return self._run(self._core.unschedule(name), conn)

    def get_schedules(self, *, conn: psycopg.Connection[Any] | None = None) -> list[ScheduleInfo]:
        """Every schedule, by name."""
        return self._run(self._core.get_schedules(), conn)

    def run_schedules(self) -> list[int]:
        """Send the jobs of every schedule slot that is due now (started instances do this
        every maintenance interval); returns the ids this call sent. A schedule that cannot
        send its job is logged and tried again next time; the others are sent."""
        sent = []
        for info, slot in self._run(self._core.due_schedules(), None):
            try:
                job_id = self._run(self._core.fire_schedule(info, slot), None)
            except PgQueueError as exc:
                log.error("schedule %s could not send its job for %s: %s", info.name, slot, exc)
                continue
            if job_id is not None:
                sent.append(job_id)
        return sent

    def grant(self, role: str, *, conn: psycopg.Connection[Any] | None = None) -> None:
        """Grant ``role`` what running pgqueue on this schema takes (sending, working,
        maintenance, cron), for today's tables and those later migrations add; run it as
        the schema's owner. Migrating and moving the clock stay the owner's."""
        self._run(self._core.grant(role), conn)

    # -- time --------------------------------------------------------------------------------

    def now(self, *, conn: psycopg.Connection[Any] | None = None) -> datetime:
        """The time by the schema's clock: the database's, unless a test moved it. Every
        decision about time (start, expiry, heartbeats, retention, cron, throttling) uses it."""
        return self._run(self._core.now(), conn)

    def set_clock(self, at: datetime | None) -> None:
        """Set the schema's clock to ``at`` (None: the database's own time again), for every
        instance on the schema. For tests: time then runs on from ``at``."""
        self._run(self._core.set_clock(at), None)

    def move_clock(self, by: float | timedelta) -> None:
        """Move the schema's clock by ``by`` seconds or a timedelta, for every instance on
        the schema: for tests, to make delays, retries, expiry and cron happen at once."""
        self._run(self._core.move_clock(by), None)

    def _maintain_periodic(self) -> MaintenanceResult:
        return self._run(self._maintenance_plan(periodic=True), None)

    def _background_tick(self) -> None:
        # Each step runs even if another failed (see AsyncPgQueue._background_tick).
        errors: list[Exception] = []
        for step in (self._maintain_periodic, self.run_schedules):
            try:
                step()
            except Exception as exc:
                errors.append(exc)
        if self._monitor_due():
            self._report(self.get_queue_stats())
        if errors:
            raise errors[0]
