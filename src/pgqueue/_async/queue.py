"""The queue object. Each method validates nothing itself and runs a plan from
:mod:`pgqueue._core` on a pooled connection, or on the caller's connection (``conn=``), inside
the caller's transaction. The asyncio flavour is written by hand; the blocking one is
generated from it by ``scripts/unasync.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool

from .._base import QueueBase, StartAfter
from .._compat import ALock, Lock, ato_thread
from .._config import check_seconds, renamed
from .._core import UNCHANGED
from .._cron import check_cron, check_timezone, label
from .._db import Plan
from .._handlers import (
    HandlerInfo,
    OnConflict,
    conflict_message,
    list_plan,
    register_plan,
    registrations,
)
from .._maintenance import MaintenanceResult, MaintenanceSettings
from .._migrate import MigrationStatus, status_plan
from .._payload import error_output, job_runs
from .._registry import JobDefinition, is_pattern
from .._worker import DEFAULT_CONCURRENCY, DEFAULT_HEARTBEAT, DEFAULT_THREADS
from ..errors import InvalidInputError, InvalidOptionError, PgQueueError
from ..flow import Flow
from ..models import Job, JobState, QueueInfo, QueueStats, ScheduleInfo
from .function import AsyncJobDecorator, AsyncJobFunction
from .results import AsyncJobHandle, AsyncResults, job_result
from .runner import AsyncConn, AsyncPeriodic, AsyncRunner, run_async

# <sync>
# import asyncio
#
# from .._async.runner import AsyncRunner
# from .._compat import in_other_thread, run_loop, run_on
# </sync>

__all__ = ["AsyncPgQueue"]

log = logging.getLogger("pgqueue")
_DECLARE_BATCH = 50  # queues declared in one transaction
T = TypeVar("T")
D = TypeVar("D")
P = ParamSpec("P")
R = TypeVar("R")


class AsyncPgQueue(QueueBase):
    """A job queue in PostgreSQL, for asyncio code.

    The database is ``dsn``, else ``$PGQUEUE_DATABASE_URL``, else an embedded PostgreSQL.
    Use ``async with AsyncPgQueue(...) as pq:`` or call :meth:`start` and :meth:`stop`.

    Connections come from a pool of ``pool_min_size`` to ``pool_max_size``, which a
    worker's loops and its handlers' sends share (plus one for LISTEN while it works);
    ``null_pool=True`` connects for each use instead (behind PgBouncer), and ``pool=``
    uses the caller's open pool, never opened or closed here (see docs/scaling.md).
    Behind PgBouncer (see docs/scaling.md): ``prepare=False`` keeps psycopg from preparing
    statements, which a pooler in transaction mode before PgBouncer 1.21 (or with
    ``max_prepared_statements = 0``) cannot carry; ``listen_dsn`` gives the notification
    listeners a connection of their own (straight to PostgreSQL: a pooler in transaction
    mode drops notifications); ``listen=False`` polls only.

    ``partition=True`` creates a new schema with the job table partitioned by queue (None:
    ``$PGQUEUE_PARTITION``; see docs/scaling.md); an existing schema keeps its layout, and
    asking for the partitioned layout on one without it raises MigrationError.

    Workers write the handlers they serve to the schema's registry under ``app_name``
    (default: each handler's top-level package) and warn at start when another app
    registered a different handler for one of their queues (apps sharing a schema take
    each other's jobs); ``on_conflict="error"`` makes the worker refuse to start instead,
    raising HandlerConflictError (see docs/operations.md).

    Example:
        ```python
        pq = AsyncPgQueue("postgresql://app@db/app")

        @pq.job("emails", retry_limit=3)
        async def send_email(data: dict) -> None:
            ...

        async with pq:
            await send_email.send({"to": "ada@example.com"})
        ```
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        schema: str = "pgqueue",
        migrate: bool = True,
        pool_min_size: int = 1,
        pool_max_size: int = 10,
        null_pool: bool = False,
        pool: AsyncConnectionPool[Any] | None = None,
        connect_timeout: float = 10.0,
        maintenance: MaintenanceSettings | bool = True,
        prepare: bool = True,
        listen: bool = True,
        listen_dsn: str | None = None,
        partition: bool | None = None,
        app_name: str | None = None,
        on_conflict: OnConflict = "warn",
    ) -> None:
        if pool is not None and not isinstance(pool, AsyncConnectionPool):
            raise InvalidOptionError(
                f"pool= takes a psycopg_pool.AsyncConnectionPool, got {type(pool).__name__}"
            )
        super().__init__(
            dsn,
            schema=schema,
            migrate=migrate,
            pool_min_size=pool_min_size,
            pool_max_size=pool_max_size,
            null_pool=null_pool,
            pool=pool,
            connect_timeout=connect_timeout,
            maintenance=maintenance,
            prepare=prepare,
            listen=listen,
            listen_dsn=listen_dsn,
            partition=partition,
            app_name=app_name,
            on_conflict=on_conflict,
        )
        self._runner: AsyncRunner | None = None
        self._maintenance: AsyncPeriodic | None = None
        self._results: AsyncResults | None = None
        self._results_lock = Lock()
        self._declare_lock = ALock()
        # <sync>
        # # While work() runs: its runner and loop, which the other threads' calls use, so
        # # that handlers' sends share the worker's pool.
        # self._lent: tuple[AsyncRunner, asyncio.AbstractEventLoop] | None = None
        # </sync>

    # -- handlers ----------------------------------------------------------------------------

    def job(
        self,
        name: str,
        *,
        description: str | None = None,
        local_concurrency: int | None = None,
        concurrency: int | None = None,
        **defaults: Any,
    ) -> AsyncJobDecorator:
        """Register the decorated function (sync or async) as the handler of queue ``name``.

        A glob pattern (``"emails.*"``) registers a pattern handler: it serves every queue
        that exists (workers look again at each poll) whose name it matches and that has no
        handler of its own (the longest matching pattern wins). It takes send options only,
        and ``.send(data, queue="emails.welcome")`` names the queue.

        ``defaults`` are queue options (retry_limit, expire_in, rate_limit, ...; the queue is
        created or updated with them on start) and send options (priority, singleton_key,
        ...) that ``.send()`` uses when the caller leaves them out. ``local_concurrency``
        caps how many of these jobs one worker runs at once (``concurrency`` here is its
        earlier name; the queue's limit across workers is ``create_queue``'s
        ``concurrency``). A data parameter annotated with a pydantic model
        is validated on ``.send()`` and parsed before the handler runs; a parameter annotated
        :class:`RunningJob` (or ``Job``, or named ``job``) receives the running job.

        Example:
            ```python
            @pq.job("emails", retry_limit=5, expire_in=60, local_concurrency=10)
            async def send_email(data: dict, job: RunningJob) -> str:
                job.log(f"sending to {data['to']}")
                return "sent"

            await send_email.send({"to": "ada@example.com"}, priority=1)
            ```
        """

        def register(func: Callable[..., Any]) -> AsyncJobFunction[Any, Any, Any]:
            local = renamed("local_concurrency", local_concurrency, "concurrency", concurrency)
            definition = self._register(name, func, description, local, defaults)
            return AsyncJobFunction(self, definition)

        return register

    def cron(
        self,
        expression: str,
        *,
        name: str | None = None,
        tz: str = "UTC",
        data: Any = None,
        key: str | None = None,
        description: str | None = None,
        **options: Any,
    ) -> AsyncJobDecorator:
        """Register the decorated function as a job (queue ``name``, default the function's
        name) and send it ``data`` at every slot of the cron ``expression`` in time zone
        ``tz``. Schedules declared in code are written on start; code schedules no longer
        declared are then deleted. Bad expressions or zones raise InvalidScheduleError here.
        A job may have several schedules, each with its own ``key``: stack the decorators
        (the outer ones take the options of the job the innermost one registered).

        Example:
            ```python
            @pq.cron("0 3 * * *", tz="Europe/Paris", data={"kind": "daily"})
            async def report(data: dict) -> None:
                ...
            ```
        """
        check_cron(expression)
        check_timezone(tz)

        def register(func: Callable[..., Any]) -> AsyncJobFunction[Any, Any, Any]:
            if isinstance(func, AsyncJobFunction):  # a schedule more for a registered job
                if (name is not None and name != func.definition.name) or options:
                    raise InvalidInputError(
                        "a stacked @cron takes the name and options of the job it schedules"
                    )
                job = func
            else:
                queue: str = name or str(getattr(func, "__name__", ""))
                if is_pattern(queue):
                    raise InvalidInputError(
                        f"@cron sends jobs to one queue: {queue!r} is a pattern"
                    )
                job = self.job(queue, description=description, **options)(func)
            self._declare_cron(job.definition.name, expression, tz, data, job.definition, key)
            return job

        return register

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> AsyncPgQueue:
        """Connect (starting the embedded server if no DSN is set), migrate, open the pool.

        Example:
            ```python
            pq = await AsyncPgQueue("postgresql://app@db/app").start()
            try:
                await pq.send("emails", {"to": "ada@example.com"})
            finally:
                await pq.stop()
            ```
        """
        if self._runner is not None:
            return self
        dsn = self._dsn if self._dsn is not None else await ato_thread(self._resolve_embedded)
        runner: AsyncRunner | None = None
        try:
            runner = self._runner_for(dsn, AsyncRunner, self._pool)
            runner.check()
            await ato_thread(self._setup, dsn)
            await runner.open()
            self._runner = runner
            await self._declare_queues()
            if self._run_maintenance:
                self._maintenance = AsyncPeriodic(
                    f"pgqueue-maintenance-{self.schema}",
                    self.maintenance_settings.interval,
                    self._background_tick,
                )
                await self._maintenance.start()
        except BaseException:
            self._runner = None
            if runner is not None:
                await runner.close()
            await ato_thread(self._stop_embedded)
            raise
        return self

    async def _declare_queues(self) -> None:
        """Create or update the queues of handlers registered since the last call, and write
        the schedules declared in code. A caller arriving meanwhile waits for it, so no job
        is sent to a queue whose declaration is under way."""
        if self._declared():
            return
        async with self._declare_lock:
            if self._runner is None:
                return
            pending = self.registry.undeclared()
            if pending:
                configured = pending
                if self.on_conflict == "error":
                    configured = await self._unclashing(pending)
                # In batches: in the partitioned layout each queue creates a table, whose
                # locks a transaction holds to its end (max_locks_per_transaction).
                for phase, definitions in (
                    ({"configure": False}, pending),
                    ({"create": False}, configured),
                ):
                    for i in range(0, len(definitions), _DECLARE_BATCH):
                        batch = definitions[i : i + _DECLARE_BATCH]
                        await self._runner.run(self._core.declare_queues(batch, **phase))
                self.registry.declared(pending)
            if not self._cron.synced:
                await self._runner.run(self._cron.write_declared())
                self._cron.synced = True

    async def _unclashing(self, definitions: list[JobDefinition]) -> list[JobDefinition]:
        """Those of ``definitions`` whose queue no other application's handler serves (in
        the registry): in the error mode, the options of the others are left as that
        application set them, as this one's workers will refuse to start."""
        assert self._runner is not None
        rows = registrations(definitions, self.app_name)
        try:
            conflicts = await self._runner.run(
                register_plan(self._core.sql, rows, "", strict=True, write=False)
            )
        except PgQueueError as exc:  # (the worker, which writes the registry, will say more)
            log.warning("could not read the handler registry: %s", exc)
            return definitions
        clashing = {c.name for c in conflicts}
        if clashing:
            log.warning(
                "left the options of queues %s as another app set them: %s",
                ", ".join(sorted(clashing)),
                conflict_message(conflicts),
            )
        return [d for d in definitions if d.name not in clashing]

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop working (if :meth:`work` runs), close the pool, stop an embedded server this
        object started. Idempotent.

        Example:
            ```python
            await pq.stop(timeout=10)
            ```
        """
        self.stop_working()
        await ato_thread(self._work_done.wait, timeout)
        maintenance, self._maintenance = self._maintenance, None
        if maintenance is not None:
            await maintenance.stop()
        results, self._results = self._results, None
        if results is not None:
            await results.stop()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.close(timeout=timeout)
        await ato_thread(self._stop_embedded)

    async def __aenter__(self) -> AsyncPgQueue:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _run(self, plan: Plan[T], conn: AsyncConn | None, atomic: bool = True) -> T:
        """Run a plan on ``conn``, else on a pooled connection: in one transaction when
        ``atomic`` (plans of one statement pass False and save two round trips)."""
        if conn is not None:
            if not isinstance(conn, psycopg.AsyncConnection):
                plan.close()
                # <async>
                raise InvalidInputError(
                    "AsyncPgQueue needs a psycopg.AsyncConnection for conn= "
                    "(use PgQueue with a sync connection)"
                )
                # </async>
                # <sync>
                # raise InvalidInputError(
                #     "PgQueue needs a sync psycopg.Connection for conn= "
                #     "(use AsyncPgQueue with an async connection)"
                # )
                # </sync>
            await self._declare_queues()
            if atomic and conn.autocommit:  # outside a transaction of the caller's
                async with conn.transaction():
                    return await run_async(conn, plan)
            return await run_async(conn, plan)
        if self._runner is None:
            plan.close()
            raise PgQueueError("AsyncPgQueue is not started: call start() or pass conn=")
        await self._declare_queues()
        # <sync>
        # lent = self._lent
        # if lent is not None and in_other_thread(lent[1]):
        #     return run_on(lent[1], lent[0].run(plan, None, atomic))
        # </sync>
        return await self._runner.run(plan, None, atomic)

    async def work(
        self,
        *,
        queues: list[str] | None = None,
        local_concurrency: int | None = None,
        concurrency: int | None = None,
        threads: int = DEFAULT_THREADS,
        poll_interval: float = 2.0,
        shutdown_timeout: float = 30.0,
        until_empty: bool = False,
        install_signal_handlers: bool = False,
        heartbeat_seconds: float = DEFAULT_HEARTBEAT,
        capture_logs: bool | int | str = False,
        metrics_port: int | None = None,
        metrics_host: str = "0.0.0.0",
        health_port: int | None = None,
        health_host: str = "0.0.0.0",
        health_timeout: float | None = None,
    ) -> None:
        """Run the registered handlers until :meth:`stop` (or, with ``until_empty``, until no
        job is runnable). ``queues`` limits the handlers run (queue names, or glob patterns
        such as ``"emails.*"``, each of which must select a handler); ``local_concurrency`` caps the
        jobs this worker runs at once (default 100; ``concurrency`` is its earlier name),
        and ``threads`` those of sync handlers (each takes a thread); runs beat every
        ``heartbeat_seconds`` / 3 and count as dead after ``heartbeat_seconds`` of silence
        (unless their job sets ``heartbeat_seconds``). With ``capture_logs`` (True for
        INFO, or a level), the ``logging`` records a handler emits join its run's log,
        beside its ``job.log()`` lines (see ``Job.logs``). With ``metrics_port``,
        Prometheus metrics are kept (see :mod:`pgqueue.metrics`) and served on
        ``metrics_host``:``metrics_port`` while it works. With ``health_port``, ``GET
        /healthz`` on ``health_host``:``health_port`` answers 200 while the worker is alive
        (its loops run, a statement succeeded within ``health_timeout`` seconds: by default
        the longest of 30, three poll intervals and the heartbeat), else 503 with a JSON body
        naming what is wrong; ``GET /readyz`` answers 200 while it takes jobs, 503 while it
        starts or stops.

        Example:
            ```python
            async with pq:
                await pq.work(queues=["emails"], local_concurrency=20, health_port=8080)
            ```
        """
        if self._runner is None:
            raise PgQueueError("AsyncPgQueue is not started: call start() first")
        kept = None
        if metrics_port is not None:
            from .. import metrics  # needs the metrics extra: imported only when asked

            kept = metrics.enable(self)  # before the worker is made, so that it tells them
        # <async>
        runner = self._runner
        # </async>
        # <sync>
        # # The worker runs on an event loop of its own, with a pool like this object's.
        # runner = self._runner_for(self._runner.dsn, AsyncRunner)
        # </sync>
        local = renamed("local_concurrency", local_concurrency, "concurrency", concurrency)
        worker = self._worker_for(
            runner,
            queues=queues,
            concurrency=DEFAULT_CONCURRENCY if local is None else local,
            threads=threads,
            poll_interval=poll_interval,
            shutdown_timeout=shutdown_timeout,
            until_empty=until_empty,
            heartbeat_seconds=heartbeat_seconds,
            capture_logs=capture_logs,
            health_port=health_port,
            health_host=health_host,
            health_timeout=health_timeout,
        )
        # <sync>
        #
        # async def main() -> None:
        #     await runner.open()
        #     self._lent = (runner, asyncio.get_running_loop())
        #     try:
        #         await worker.run(install_signal_handlers)
        #     finally:
        #         self._lent = None
        #         await runner.close()
        #
        # </sync>
        served = None
        try:
            if kept is not None and metrics_port is not None:
                served = kept.serve(metrics_port, metrics_host)
            await self._declare_queues()
            # <async>
            await worker.run(install_signal_handlers)
            # </async>
            # <sync>
            # run_loop(main())
            # </sync>
        finally:
            self._end_work()
            if served is not None:
                served.close()

    # -- schema ------------------------------------------------------------------------------

    async def migrate(self) -> list[int]:
        """Apply pending migrations now; returns the versions applied.

        Example:
            ```python
            pq = AsyncPgQueue("postgresql://owner@db/app", migrate=False)
            applied = await pq.migrate()  # [] when the schema was up to date
            ```
        """
        dsn = self._dsn if self._dsn is not None else await ato_thread(self._resolve_embedded)
        migrate, self._migrate = self._migrate, True
        try:
            return await ato_thread(self._setup, dsn)
        finally:
            self._migrate = migrate

    async def migration_status(self, *, conn: AsyncConn | None = None) -> MigrationStatus:
        """The schema's version and the migrations still pending.

        Example:
            ```python
            status = await pq.migration_status()
            if not status.up_to_date:
                print(f"at version {status.current}, {len(status.pending)} to apply")
            ```
        """
        return await self._run(status_plan(self.sql), conn)

    async def maintain(self) -> MaintenanceResult:
        """Run one maintenance pass now: expire, archive, delete (skipped, returning
        ``ran=False``, while another instance runs one).

        Example:
            ```python
            result = await pq.maintain()
            print(result.ran, result.archived, result.deleted)
            ```
        """
        return await self._run(self._maintenance_plan(), None)

    # -- producing ---------------------------------------------------------------------------

    async def send(
        self,
        name: str,
        data: Any = None,
        *,
        conn: AsyncConn | None = None,
        **options: Any,
    ) -> AsyncJobHandle | None:
        """Send a job; returns its id (a handle: ``await handle.result()`` waits for its
        output), or None when a singleton or policy blocked it.

        Example:
            ```python
            handle = await pq.send("emails", {"to": "ada@example.com"}, priority=5, retry_limit=3)
            if handle is not None:
                output = await handle.result(timeout=60)
            ```
        """
        plan = self._core.send(name, data, options)
        if self._observer is None:
            job_id = await self._run(plan, conn, atomic="depends_on" in options)
        else:
            job_id = await self._observed_send([name], plan, conn, "depends_on" in options)
        return None if job_id is None else AsyncJobHandle(job_id, self)

    async def send_after(
        self,
        name: str,
        data: Any,
        start_after: StartAfter,
        *,
        conn: AsyncConn | None = None,
        **options: Any,
    ) -> AsyncJobHandle | None:
        """Send a job that starts after a datetime, a timedelta or a number of seconds.

        Example:
            ```python
            await pq.send_after("reminders", {"user": 7}, timedelta(hours=1))
            ```
        """
        return await self.send(name, data, conn=conn, **self._send_options(options, start_after))

    async def upsert(
        self,
        name: str,
        data: Any = None,
        *,
        singleton_key: str,
        conn: AsyncConn | None = None,
        **options: Any,
    ) -> int | None:
        """Send a job unless one of ``singleton_key`` waits in the queue: then that job
        takes ``data`` (and ``priority``, if given) instead, the latest data winning. Its
        id, or None when the key's job is running (a singleton key allows one at a time).

        Example:
            ```python
            await pq.upsert("reindex", {"doc": 42, "version": 3}, singleton_key="doc-42")
            ```
        """
        plan = self._core.upsert(name, data, {**options, "singleton_key": singleton_key})
        if self._observer is None:
            return await self._run(plan, conn)
        job_id: int | None = await self._observed_send([name], plan, conn, True)
        return job_id

    async def insert(
        self,
        jobs: Iterable[Mapping[str, Any]],
        *,
        conn: AsyncConn | None = None,
    ) -> list[int | None]:
        """Send many jobs in one statement (mappings of ``name``, ``data`` and options);
        their ids, None where one was blocked (:meth:`result` waits for any of them).

        Example:
            ```python
            ids = await pq.insert([{"name": "emails", "data": {"to": to}} for to in addresses])
            ```
        """
        jobs = list(jobs)
        atomic = any(isinstance(job, Mapping) and "depends_on" in job for job in jobs)
        if self._observer is None:
            return await self._run(self._core.insert_many(jobs), conn, atomic)
        names = [str(job.get("name")) if isinstance(job, Mapping) else "" for job in jobs]
        ids: list[int | None] = await self._observed_send(
            names, self._core.insert_many(jobs), conn, atomic
        )
        return ids

    async def send_flow(
        self, flow: Flow, *, conn: AsyncConn | None = None
    ) -> list[AsyncJobHandle | None]:
        """Send the jobs of a :class:`~pgqueue.Flow` at once, all or none; their handles in
        the order they were added (None where a singleton or policy blocked a job no
        other job of the flow depends on). DependencyError, nothing sent, for a cycle, a
        missing parent, or a blocked job that others depend on.

        Example:
            ```python
            flow = Flow()
            fetch = flow.add("fetch", {"url": url})
            flow.add("parse", depends_on=[fetch])
            handles = await pq.send_flow(flow)
            ```
        """
        if self._observer is None or not isinstance(flow, Flow):
            ids = await self._run(self._core.send_flow(flow), conn)
        else:
            names = [step.name for step in flow.steps]
            ids = await self._observed_send(names, self._core.send_flow(flow), conn, True)
        return [None if i is None else AsyncJobHandle(i, self) for i in ids]

    async def _observed_send(
        self, names: list[str], plan: Plan[T], conn: AsyncConn | None, atomic: bool
    ) -> T:
        """Run a producing plan, telling the observers (metrics, tracing) of it: the plan
        runs within what ``send_started`` began (a trace's send span)."""
        observer = self._observer
        assert observer is not None
        token = observer.send_started(names)
        try:
            result = await self._run(plan, conn, atomic)
        except BaseException as exc:
            observer.send_ended(token, names, [], exc)
            raise
        ids: list[Any] = result if isinstance(result, list) else [result]
        observer.send_ended(token, names, ids, None)
        return result

    async def parents(self, job: Job | int, *, conn: AsyncConn | None = None) -> list[Job]:
        """The jobs ``job`` depends on, in the order given (a handler reads its parents'
        outputs so: ``[p.output for p in await pq.parents(job)]``). Parents deleted since
        (by retention) are left out.

        Example:
            ```python
            @pq.job("assemble")
            async def assemble(job: RunningJob) -> list[str]:
                return [parent.output for parent in await pq.parents(job)]
            ```
        """
        return await self._run(self._core.parents(job), conn, atomic=False)

    async def result(self, job: Job | int, *, timeout: float | None = None) -> Any:
        """Wait for a job to end and return its output (what its handler returned).

        Raises JobFailedError (with the job's final state and error) if it failed,
        expired or was cancelled; ResultTimeoutError if it has not ended within
        ``timeout`` seconds (None: no limit); JobNotFoundError if there is no such job.
        The waiters of one queue object share one listening connection; a poll every few
        seconds backs up its notifications.

        Example:
            ```python
            job_id = await pq.send("render", {"page": 1})
            assert job_id is not None
            try:
                png = await pq.result(job_id, timeout=30)
            except JobFailedError as exc:
                print(exc.state, exc.error)
            ```
        """
        ids, _ = job_runs(job)
        if len(ids) != 1:
            raise InvalidInputError(f"result() waits for one job, got {job!r}")
        if timeout is not None:
            check_seconds("timeout", timeout)
        if self._runner is None:
            raise PgQueueError("AsyncPgQueue is not started: call start() first")
        with self._results_lock:  # (one listener, whichever thread asks first)
            if self._results is None:
                self._results = AsyncResults(
                    self._listen_to(self._runner.dsn),
                    self._core,
                    lambda plan: self._run(plan, None, atomic=False),
                    prepare=self._prepare,
                )
            results = self._results
        return job_result(await results.wait(ids[0], timeout))

    # -- consuming ---------------------------------------------------------------------------

    async def fetch(
        self,
        name: str,
        batch_size: int = 1,
        *,
        conn: AsyncConn | None = None,
    ) -> list[Job]:
        """Claim up to ``batch_size`` jobs of a queue (they become active).

        Example:
            ```python
            for job in await pq.fetch("exports", batch_size=10):
                try:
                    await pq.complete(job, {"rows": export(job.data)})
                except Exception as exc:
                    await pq.fail(job, exc)
            ```
        """
        return await self._run(self._core.fetch(name, batch_size, None), conn)

    async def complete(
        self,
        jobs: Job | int | Iterable[Job | int],
        output: Any = None,
        *,
        conn: AsyncConn | None = None,
    ) -> list[int]:
        """Complete the runs of jobs from :meth:`fetch` with ``output``; returns the ids
        completed. A run that no longer holds its job (it expired and was claimed again,
        or was cancelled) changes nothing and is left out. A bare id completes whichever
        run holds the job now: pass the fetched ``Job`` to be safe.

        Example:
            ```python
            [job] = await pq.fetch("exports")
            await pq.complete(job, {"rows": 120})
            ```
        """
        ids, runs = job_runs(jobs)
        return await self._run(
            self._core.complete(ids, runs, self._outputs(ids, output)), conn, atomic=False
        )

    async def fail(
        self,
        jobs: Job | int | Iterable[Job | int],
        error: Any = None,
        *,
        retry: bool = True,
        conn: AsyncConn | None = None,
    ) -> list[int]:
        """Fail the runs of fetched jobs: each job goes to retry while retries remain (and
        ``retry``), else to failed; returns the ids failed (a run that lost its job is left
        out, as in :meth:`complete`).

        Example:
            ```python
            [job] = await pq.fetch("exports")
            await pq.fail(job, {"message": "upstream down"}, retry=True)
            ```
        """
        ids, runs = job_runs(jobs)
        outputs = self._outputs(ids, error_output(error))
        return await self._run(
            self._core.fail(ids, runs, outputs, terminal=[not retry] * len(ids)),
            conn,
            atomic=False,
        )

    async def release(
        self,
        jobs: Job | int | Iterable[Job | int],
        *,
        conn: AsyncConn | None = None,
    ) -> list[int]:
        """Hand the runs of fetched jobs back unfinished, to run again at once without
        spending a retry (what a stopping worker does with the jobs it holds); returns the
        ids handed back (a run that lost its job is left out, as in :meth:`complete`).

        Example:
            ```python
            jobs = await pq.fetch("exports", batch_size=5)
            await pq.release(jobs)  # shutting down: they run again elsewhere
            ```
        """
        ids, runs = job_runs(jobs)
        return await self._run(self._core.release(ids, runs), conn, atomic=False)

    async def touch(
        self,
        jobs: Job | int | Iterable[Job | int],
        progress: Any = None,
        *,
        conn: AsyncConn | None = None,
    ) -> list[int]:
        """Heartbeat the runs of fetched jobs (and store ``progress`` unless None); returns
        the ids of the runs that still hold their jobs.

        Example:
            ```python
            [job] = await pq.fetch("exports")
            await pq.touch(job, {"done": 50, "of": 100})
            ```
        """
        ids, runs = job_runs(jobs)
        return await self._run(
            self._core.touch(ids, runs, self._progress(ids, progress)), conn, atomic=False
        )

    # -- jobs --------------------------------------------------------------------------------

    async def cancel(self, ids: int | Iterable[int], *, conn: AsyncConn | None = None) -> list[int]:
        """Cancel waiting or active jobs; returns the ids cancelled.

        Example:
            ```python
            cancelled = await pq.cancel([job_id])
            ```
        """
        return await self._run(self._core.cancel(ids), conn)

    async def resume(self, ids: int | Iterable[int], *, conn: AsyncConn | None = None) -> list[int]:
        """Send cancelled jobs back to ``created``; returns the ids resumed.

        Example:
            ```python
            await pq.resume(job_id)
            ```
        """
        return await self._run(self._core.resume(ids), conn)

    async def retry(self, ids: int | Iterable[int], *, conn: AsyncConn | None = None) -> list[int]:
        """Send failed or expired jobs back to ``retry``, to run again at once (with one more
        retry allowed if they had used theirs); returns the ids retried.

        Example:
            ```python
            failed = await pq.find_jobs("emails", state="failed")
            await pq.retry([job.id for job in failed])
            ```
        """
        return await self._run(self._core.retry(ids), conn)

    async def delete_job(
        self, ids: int | Iterable[int], *, conn: AsyncConn | None = None
    ) -> list[int]:
        """Delete jobs, wherever they are (job table or archive); returns the ids deleted.

        Example:
            ```python
            await pq.delete_job(job_id)
            ```
        """
        return await self._run(self._core.delete_job(ids), conn)

    async def get_job_by_id(self, id: int, *, conn: AsyncConn | None = None) -> Job | None:
        """A job by id, looking in the archive too; None if there is none.

        Example:
            ```python
            job = await pq.get_job_by_id(job_id)
            if job is not None:
                print(job.state, job.output)
            ```
        """
        return await self._run(self._core.get_job_by_id(id), conn)

    async def find_jobs(
        self,
        queue: str | None = None,
        *,
        state: JobState | str | Iterable[JobState | str] | None = None,
        key: str | None = None,
        group: str | None = None,
        data_contains: Mapping[str, Any] | None = None,
        limit: int = 100,
        after: int = 0,
        archived: bool = False,
        conn: AsyncConn | None = None,
    ) -> list[Job]:
        """The jobs that match every filter given (a queue, one state or several, a
        singleton key, a group, data containing ``data_contains`` as JSON containment),
        in id order, at most ``limit`` (up to 10,000); the next page starts ``after`` the
        last id. ``archived`` looks in the archive too.

        Example:
            ```python
            page = await pq.find_jobs("emails", state=["failed", "expired"], limit=50)
            while page:
                for job in page:
                    print(job.id, job.errors)
                page = await pq.find_jobs("emails", state=["failed", "expired"], after=page[-1].id)
            ```
        """
        plan = self._core.find_jobs(queue, state, key, group, data_contains, limit, after, archived)
        return await self._run(plan, conn, atomic=False)

    async def update_job(
        self,
        id: int,
        *,
        data: Any = UNCHANGED,
        priority: int | None = None,
        start_after: StartAfter | None = None,
        conn: AsyncConn | None = None,
    ) -> Job | None:
        """Change a job that has not started: its data (validated as ``send`` does), its
        priority, its start (a datetime, a timedelta or seconds from now). Returns the job
        as changed, or None if no job of that id is waiting to start.

        Example:
            ```python
            await pq.update_job(job_id, priority=10, start_after=0)  # run it first, now
            ```
        """
        plan = self._core.update_job(id, data, priority, start_after)
        return await self._run(plan, conn)

    # -- queues ------------------------------------------------------------------------------

    async def create_queue(
        self, name: str, *, conn: AsyncConn | None = None, **options: Any
    ) -> bool:
        """Create a queue with default job options; False if it already existed.

        Example:
            ```python
            await pq.create_queue("emails.dead")
            await pq.create_queue("emails", retry_limit=5, dead_letter="emails.dead", concurrency=4)
            ```
        """
        return await self._run(self._core.create_queue(name, options), conn)

    async def update_queue(
        self, name: str, *, conn: AsyncConn | None = None, **options: Any
    ) -> None:
        """Change the given options of a queue (``None`` clears one).

        Example:
            ```python
            await pq.update_queue("emails", rate_limit=(100, 60.0), concurrency=None)
            ```
        """
        await self._run(self._core.update_queue(name, options), conn)

    async def delete_queue(self, name: str, *, conn: AsyncConn | None = None) -> bool:
        """Delete a queue and its jobs; False if there was no such queue.

        Example:
            ```python
            await pq.delete_queue("old-reports")
            ```
        """
        return await self._run(self._core.delete_queue(name), conn)

    async def get_queue(self, name: str, *, conn: AsyncConn | None = None) -> QueueInfo | None:
        """A queue's settings, or None.

        Example:
            ```python
            queue = await pq.get_queue("emails")
            if queue is not None and queue.paused:
                await pq.resume_queue("emails")
            ```
        """
        return await self._run(self._core.get_queue(name), conn)

    async def get_queues(self, *, conn: AsyncConn | None = None) -> list[QueueInfo]:
        """Every queue, by name.

        Example:
            ```python
            names = [queue.name for queue in await pq.get_queues()]
            ```
        """
        return await self._run(self._core.get_queues(), conn)

    # -- throttling, pub/sub -----------------------------------------------------------------

    async def send_throttled(
        self,
        name: str,
        data: Any,
        seconds: int,
        key: str | None = None,
        *,
        conn: AsyncConn | None = None,
        **options: Any,
    ) -> int | None:
        """Send at most one job per ``seconds``-long window (per ``key``); extras return None.

        Example:
            ```python
            await pq.send_throttled("sync-account", {"account": 7}, seconds=60, key="account-7")
            ```
        """
        options.update(singleton_seconds=seconds, singleton_key=key)
        return await self.send(name, data, conn=conn, **options)

    async def send_debounced(
        self,
        name: str,
        data: Any,
        seconds: int,
        key: str | None = None,
        *,
        conn: AsyncConn | None = None,
        **options: Any,
    ) -> int | None:
        """Like :meth:`send_throttled`, but a send into a taken window goes to the next one
        (which then starts when that window opens); None when both are taken.

        Example:
            ```python
            await pq.send_debounced("reindex", {"doc": 42}, seconds=10, key="doc-42")
            ```
        """
        options.update(singleton_seconds=seconds, singleton_key=key, singleton_next_slot=True)
        return await self.send(name, data, conn=conn, **options)

    async def subscribe(self, event: str, queue: str, *, conn: AsyncConn | None = None) -> bool:
        """Deliver every job published as ``event`` to ``queue`` too.

        Example:
            ```python
            await pq.subscribe("user.created", "welcome-emails")
            await pq.publish("user.created", {"user": 7})
            ```
        """
        return await self._run(self._core.subscribe(event, queue), conn)

    async def unsubscribe(self, event: str, queue: str, *, conn: AsyncConn | None = None) -> bool:
        """Stop delivering ``event`` to ``queue``.

        Example:
            ```python
            await pq.unsubscribe("user.created", "welcome-emails")
            ```
        """
        return await self._run(self._core.unsubscribe(event, queue), conn)

    async def get_subscriptions(
        self, event: str | None = None, *, conn: AsyncConn | None = None
    ) -> list[tuple[str, str]]:
        """(event, queue) pairs, of one event or of all.

        Example:
            ```python
            for event, queue in await pq.get_subscriptions("user.created"):
                print(event, "->", queue)
            ```
        """
        return await self._run(self._core.subscriptions(event), conn)

    async def publish(
        self,
        event: str,
        data: Any = None,
        *,
        conn: AsyncConn | None = None,
        **options: Any,
    ) -> list[int]:
        """Send one job to every queue subscribed to ``event``, in one statement (inside the
        caller's transaction with ``conn``); returns their ids.

        Example:
            ```python
            ids = await pq.publish("user.created", {"user": 7})
            ```
        """
        return await self._run(self._core.publish(event, data, options), conn, atomic=False)

    # -- queue management --------------------------------------------------------------------

    async def pause_queue(self, name: str, *, conn: AsyncConn | None = None) -> None:
        """Stop workers claiming jobs of ``name``; sending still works.

        Example:
            ```python
            await pq.pause_queue("emails")  # during the mail provider's outage
            ```
        """
        await self._run(self._core.set_paused(name, True), conn)

    async def resume_queue(self, name: str, *, conn: AsyncConn | None = None) -> None:
        """Let workers claim jobs of ``name`` again.

        Example:
            ```python
            await pq.resume_queue("emails")
            ```
        """
        await self._run(self._core.set_paused(name, False), conn)

    async def purge_queue(self, name: str, *, conn: AsyncConn | None = None) -> int:
        """Delete the jobs of ``name`` that wait to run; returns how many.

        Example:
            ```python
            dropped = await pq.purge_queue("thumbnails")
            ```
        """
        return await self._run(self._core.purge_queue(name), conn)

    async def redrive(
        self,
        dead_letter: str,
        *,
        limit: int = 10_000,
        conn: AsyncConn | None = None,
    ) -> list[int]:
        """Send up to ``limit`` jobs waiting in dead-letter queue ``dead_letter`` back to the
        queues they failed in, as new jobs; returns the new ids.

        Example:
            ```python
            new_ids = await pq.redrive("emails.dead", limit=100)
            ```
        """
        return await self._run(self._core.redrive(dead_letter, limit), conn)

    async def get_queue_stats(
        self, name: str | None = None, *, conn: AsyncConn | None = None
    ) -> list[QueueStats]:
        """Job counts per state and the oldest waiting job's age, of one queue or of all.

        Example:
            ```python
            for stats in await pq.get_queue_stats():
                print(stats.name, stats.waiting, stats.active, stats.oldest_waiting_seconds)
            ```
        """
        return await self._run(self._core.queue_stats(name), conn)

    async def get_queue_throughput(
        self,
        name: str | None = None,
        *,
        window: float = 3600.0,
        buckets: int = 12,
        conn: AsyncConn | None = None,
    ) -> dict[str, list[tuple[int, int]]]:
        """Per queue, (completed, failed) job counts in each of ``buckets`` equal parts of
        the last ``window`` seconds, oldest first (failed counts expired jobs too; queues
        with none are left out). Counts jobs not yet archived: completed jobs move to the
        archive after ``archive_completed_after`` (an hour by default).

        Example:
            ```python
            per_queue = await pq.get_queue_throughput("emails", window=600, buckets=10)
            completed = sum(done for done, _ in per_queue.get("emails", []))
            ```
        """
        return await self._run(self._core.queue_throughput(name, window, buckets), conn)

    # -- schedules ---------------------------------------------------------------------------

    async def schedule(
        self,
        name: str,
        cron: str,
        data: Any = None,
        *,
        tz: str = "UTC",
        key: str | None = None,
        conn: AsyncConn | None = None,
        **options: Any,
    ) -> None:
        """Send ``data`` to queue ``name`` at every slot of ``cron`` (in time zone ``tz``),
        once per slot however many instances run. Replaces the queue's schedule of the
        same ``key``: a queue has one schedule per key (None is a key too).

        Example:
            ```python
            await pq.schedule("report", "*/15 * * * *", {"period": "15m"}, key="quarter")
            ```
        """
        params = self._cron.params(name, cron, data, tz, options, False, key)
        await self._run(self._cron.upsert(params), conn)

    async def unschedule(
        self, name: str, *, key: str | None = None, conn: AsyncConn | None = None
    ) -> bool:
        """Delete the schedule of queue ``name`` and ``key``; False if there was none.

        Example:
            ```python
            await pq.unschedule("report", key="quarter")
            ```
        """
        return await self._run(self._cron.delete(name, key), conn)

    async def get_schedules(self, *, conn: AsyncConn | None = None) -> list[ScheduleInfo]:
        """Every schedule, by name.

        Example:
            ```python
            for schedule in await pq.get_schedules():
                print(schedule.name, schedule.key, schedule.cron, schedule.last_slot)
            ```
        """
        return await self._run(self._cron.all(), conn)

    async def run_schedules(self) -> list[int]:
        """Send the jobs of every schedule slot that is due now (started instances do this
        every maintenance interval); returns the ids this call sent. A schedule that cannot
        send its job is logged and tried again next time; the others are sent.

        Example:
            ```python
            sent = await pq.run_schedules()
            ```
        """
        sent = []
        for info, slot in await self._run(self._cron.due(), None):
            try:
                job_id = await self._run(self._cron.fire(info, slot), None)
            except PgQueueError as exc:
                log.error("schedule %s could not send its job for %s: %s", label(info), slot, exc)
                continue
            if job_id is not None:
                sent.append(job_id)
        return sent

    async def get_handlers(self, *, conn: AsyncConn | None = None) -> list[HandlerInfo]:
        """The handler registry: which app's workers serve which handler for each queue
        (see docs/operations.md, "Apps that share a schema").

        Example:
            ```python
            apps = {h.app for h in await pq.get_handlers() if h.name == "send-email"}
            ```
        """
        return await self._run(list_plan(self.sql), conn, atomic=False)

    async def grant(self, role: str, *, conn: AsyncConn | None = None) -> None:
        """Grant ``role`` what running pgqueue on this schema takes (sending, working,
        maintenance, cron), for today's tables and those later migrations add; run it as
        the schema's owner. Migrating and moving the clock stay the owner's.

        Example:
            ```python
            await pq.grant("app_worker")  # as the schema's owner
            ```
        """
        await self._run(self._core.grant(role), conn)

    # -- time --------------------------------------------------------------------------------

    async def now(self, *, conn: AsyncConn | None = None) -> datetime:
        """The time by the schema's clock: the database's, unless a test moved it. Every
        decision about time (start, expiry, heartbeats, retention, cron, throttling) uses it.

        Example:
            ```python
            now = await pq.now()
            ```
        """
        return await self._run(self._core.now(), conn)

    async def set_clock(self, at: datetime | None) -> None:
        """Set the schema's clock to ``at`` (None: the database's own time again), for every
        instance on the schema. For tests: time then runs on from ``at``. Schedules whose
        last slot is then in the future restart from the slot current by the new time.

        Example:
            ```python
            await pq.set_clock(datetime(2030, 1, 1, tzinfo=timezone.utc))
            await pq.set_clock(None)  # the database's time again
            ```
        """
        await self._run(self._cron.after_clock(self._core.set_clock(at)), None)

    async def move_clock(self, by: float | timedelta) -> None:
        """Move the schema's clock by ``by`` seconds or a timedelta, for every instance on
        the schema: for tests, to make delays, retries, expiry and cron happen at once.

        Example:
            ```python
            await pq.send_after("reminders", {"user": 7}, 3600)
            await pq.move_clock(3600)  # the reminder is due now
            ```
        """
        await self._run(self._cron.after_clock(self._core.move_clock(by)), None)

    async def _maintain_periodic(self) -> None:
        result = await self._run(self._maintenance_plan(periodic=True), None)
        self._listeners.emit("maintenance", result)

    async def _monitor(self) -> None:
        if self._monitor_due():
            self._report(await self.get_queue_stats())

    async def _background_tick(self) -> None:
        # Each step runs even if another failed (cron must not stop because maintenance
        # fails); the first error is raised afterwards, for the runner to log and keep.
        errors: list[Exception] = []
        for step in (self._maintain_periodic, self.run_schedules, self._monitor):
            try:
                await step()
            except Exception as exc:
                errors.append(exc)
                self._listeners.emit("error", exc)
        if errors:
            raise errors[0]
