"""What the async and the blocking queue objects share: configuration, registration
(``@pq.job``, ``@pq.cron``) and the parts of their methods that never wait on the database."""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar, get_args, overload

import psycopg

from ._async.runner import AsyncRunner, connect_options
from ._config import (
    check_dsn,
    check_pool,
    check_schema,
    describe_dsn,
    resolve_dsn,
    resolve_partition,
)
from ._core import Core
from ._cron import Schedules
from ._db import Plan, connect_error
from ._embedded import EmbeddedServer, start_embedded
from ._handlers import OnConflict, check_app_name, check_on_conflict
from ._maintenance import MaintenanceResult, MaintenanceSettings, maintain_plan
from ._migrate import migrate_plan
from ._observe import Observer, combine
from ._payload import encode_json
from ._registry import JobDefinition, Registry
from ._sql import Statements
from ._sync.runner import Runner, run_sync
from ._worker import Worker
from .errors import InvalidDsnError, InvalidInputError, InvalidOptionError, WorkerError
from .models import JobState, QueueStats

__all__ = ["EventName", "QueueBase", "StartAfter"]

log = logging.getLogger("pgqueue")
RunnerT = TypeVar("RunnerT", Runner, AsyncRunner)
StartAfter = datetime | timedelta | float | int
EventName = Literal["listening", "maintenance", "stats", "error"]


class Listeners:
    """The callbacks registered with ``on()``, by event. A callback that raises is logged
    and the others still run: an observer never breaks what it observes."""

    def __init__(self) -> None:
        self._callbacks: defaultdict[str, list[Callable[[Any], object]]] = defaultdict(list)

    def add(self, event: EventName, callback: Callable[[Any], object]) -> None:
        self._callbacks[event].append(callback)

    def wants(self, event: EventName) -> bool:
        return bool(self._callbacks.get(event))

    def emit(self, event: EventName, value: object) -> None:
        for callback in self._callbacks.get(event, ()):
            try:
                callback(value)
            except (Exception, SystemExit):
                log.exception("%s callback %r failed", event, callback)


class QueueBase:
    """Configuration and state shared by :class:`AsyncPgQueue` and :class:`PgQueue`: the
    parts that never wait on the database."""

    def __init__(
        self,
        dsn: str | None,
        *,
        schema: str,
        migrate: bool,
        pool_min_size: int,
        pool_max_size: int,
        null_pool: bool = False,
        pool: Any = None,
        connect_timeout: float,
        maintenance: MaintenanceSettings | bool,
        prepare: bool = True,
        listen: bool = True,
        listen_dsn: str | None = None,
        partition: bool | None = None,
        app_name: str | None = None,
        on_conflict: OnConflict = "warn",
    ) -> None:
        self.schema = check_schema(schema)
        self.app_name = check_app_name(app_name)
        self.on_conflict = check_on_conflict(on_conflict)
        resolve_partition(partition)  # refused now if bad; None still reads the variable
        self._partition = partition
        if pool is not None and dsn is None:
            dsn = pool.conninfo or None  # migrations and LISTEN connect on their own
            if dsn is None:
                raise InvalidOptionError("with pool=, give dsn= too (pool.conninfo is empty)")
        self._dsn = resolve_dsn(dsn)
        self._prepare = True
        self._listen = True
        self._listen_dsn: str | None = None
        self._pool = pool
        self._null_pool = False
        self._pool_min_size, self._pool_max_size = check_pool(pool_min_size, pool_max_size)
        self._configure_connections(
            null_pool=null_pool,
            prepare=prepare,
            listen=listen,
            listen_dsn=listen_dsn,
        )
        self._migrate = migrate
        self._connect_timeout = connect_timeout
        self._embedded: EmbeddedServer | None = None
        if maintenance is True:
            maintenance = MaintenanceSettings()
        self.maintenance_settings: MaintenanceSettings = maintenance or MaintenanceSettings()
        self._run_maintenance = maintenance is not False
        self.sql = Statements(self.schema)
        self._core = Core(self.sql, Registry())
        self._listeners = Listeners()
        self._monitored_at = time.monotonic()  # the first report comes one interval in
        self._cron = Schedules(self._core)
        self._worker: Worker | None = None
        self._work_done = threading.Event()  # clear while work() runs
        self._work_done.set()
        # Reentrant: stop_working() may run in a signal handler on the thread that holds it.
        self._work_lock = threading.RLock()
        # Told of sends and runs (pgqueue.metrics, pgqueue.tracing): None while both are off.
        self._observer: Observer | None = None
        self._observing: dict[str, Observer] = {}  # each attached observer, by kind

    def _observe(self, kind: str, observer: Observer) -> Observer:
        """Attach ``observer`` (once per kind: the one attached first is kept and returned).
        Workers that begin afterwards tell it of their runs."""
        with self._work_lock:
            if kind not in self._observing:
                self._observing[kind] = observer
                self._observer = combine(self._observer, observer)
            return self._observing[kind]

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

    def _configure_connections(
        self,
        *,
        pool_min_size: int | None = None,
        pool_max_size: int | None = None,
        null_pool: bool | None = None,
        prepare: bool | None = None,
        listen: bool | None = None,
        listen_dsn: str | None = None,
    ) -> None:
        """Set the pool this object opens on start and how connections are made (the
        constructor's options; the worker command's flags override them before start):
        None leaves an option as it is. A null pool connects for each use."""
        for option, value in (("null_pool", null_pool), ("prepare", prepare), ("listen", listen)):
            if value is not None and not isinstance(value, bool):
                raise InvalidOptionError(f"{option} must be True or False, got {value!r}")
        if null_pool and self._pool is not None:
            raise InvalidOptionError("give pool= or null_pool=True, not both")
        if listen_dsn is not None and (not isinstance(listen_dsn, str) or not listen_dsn.strip()):
            raise InvalidDsnError(f"listen_dsn must be a database URL, got {listen_dsn!r}")
        if listen_dsn is not None:
            check_dsn(listen_dsn)  # a typo fails here, not in a listener's reconnect loop
        if pool_min_size is not None or pool_max_size is not None:
            self._pool_min_size, self._pool_max_size = check_pool(
                self._pool_min_size if pool_min_size is None else pool_min_size,
                self._pool_max_size if pool_max_size is None else pool_max_size,
            )
        if null_pool is not None:
            self._null_pool = null_pool
        if prepare is not None:
            self._prepare = prepare
        if listen is not None:
            self._listen = listen
        if listen_dsn is not None:
            self._listen_dsn = listen_dsn

    def _connections(self) -> dict[str, Any]:
        """The connection options, as the constructor takes them."""
        return {"prepare": self._prepare, "listen": self._listen, "listen_dsn": self._listen_dsn}

    def _unseen_sends(self) -> str | None:
        """Why jobs sent now may be out of sight of this object's own connections (sent in a
        transaction still open), or None: a drain refuses to run then."""
        return None

    def _listen_to(self, dsn: str) -> str | None:
        """Where notifications are listened for: None when polling only."""
        if not self._listen:
            return None
        return self._listen_dsn or dsn

    def _runner_for(self, dsn: str, runner: type[RunnerT], pool: Any = None) -> RunnerT:
        """A runner with this object's pool settings (``Runner`` or ``AsyncRunner``), on
        ``pool`` (the caller's) if given."""
        return runner(
            dsn,
            name=f"pgqueue.{self.schema}",
            min_size=self._pool_min_size,
            max_size=self._pool_max_size,
            connect_timeout=self._connect_timeout,
            null=self._null_pool,
            pool=pool,
            prepare=self._prepare,
        )

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
                dsn,
                connect_timeout=max(1, round(self._connect_timeout)),
                **connect_options(dsn, self._prepare),
            )
        except psycopg.Error as exc:
            raise connect_error(dsn, exc) from exc
        with conn:
            applied = (
                run_sync(conn, migrate_plan(self.sql, partition=self._partition))
                if self._migrate
                else []
            )
        if applied:
            log.info("migrated schema %s to version %s", self.schema, applied[-1])
        log.debug("connected to %s", describe_dsn(dsn))
        return applied

    def _register(
        self,
        name: str,
        func: Callable[..., Any],
        description: str | None,
        concurrency: int | None,
        defaults: dict[str, Any],
    ) -> JobDefinition:
        """Register ``func`` as the handler of queue ``name`` (what ``@pq.job`` does)."""
        return self.registry.register(
            name, func, description=description, concurrency=concurrency, options=defaults
        )

    def _declare_cron(
        self,
        queue: str,
        expression: str,
        tz: str,
        data: Any,
        definition: JobDefinition,
        key: str | None = None,
    ) -> None:
        """Keep the schedule ``@pq.cron`` declares, to be written on start; data, options
        and key are validated now."""
        self._cron.declare(queue, expression, tz, data, definition.send_options, key)

    @overload
    def on(self, event: Literal["listening"], callback: Callable[[str], object]) -> None: ...
    @overload
    def on(
        self, event: Literal["maintenance"], callback: Callable[[MaintenanceResult], object]
    ) -> None: ...
    @overload
    def on(
        self, event: Literal["stats"], callback: Callable[[list[QueueStats]], object]
    ) -> None: ...
    @overload
    def on(self, event: Literal["error"], callback: Callable[[Exception], object]) -> None: ...
    def on(self, event: EventName, callback: Callable[[Any], object]) -> None:
        """Call ``callback`` each time ``event`` happens in this object's background work:

        - ``"listening"`` (the worker's id): a worker's notification connection is up, at
          start and after each reconnection: from then on new jobs wake it at once;
        - ``"maintenance"`` (a :class:`MaintenanceResult`): a periodic maintenance pass
          finished (``ran`` is False when another instance's pass made this one unneeded);
        - ``"stats"`` (every queue's :class:`QueueStats`): each ``monitor_interval``;
        - ``"error"`` (the exception): a periodic step (maintenance, cron, stats) failed;
          it is tried again at the next tick.

        Callbacks run on the worker's or the periodic runner's thread and must not block;
        one that raises is logged and does not stop the others.

        Example:
            ```python
            pq.on("error", lambda exc: alerts.warn(f"pgqueue background step failed: {exc}"))
            pq.on("maintenance", lambda result: print("archived", result.archived))
            ```
        """
        if event not in get_args(EventName):
            raise InvalidInputError(f"unknown event {event!r}")
        if inspect.iscoroutinefunction(callback) or not callable(callback):
            raise InvalidInputError(
                f"an on({event!r}) callback is a plain function (it may start a task), "
                f"got {callback!r}"
            )
        self._listeners.add(event, callback)

    def add_monitor(self, callback: Callable[[list[QueueStats]], object]) -> None:
        """Hand every queue's stats to ``callback`` each ``monitor_interval`` seconds, from
        the instance's periodic runner (the stats are logged at INFO as well); the same as
        ``on("stats", callback)``.

        Example:
            ```python
            def report(stats: list[QueueStats]) -> None:
                for queue in stats:
                    gauge.labels(queue.name).set(queue.waiting)

            pq.add_monitor(report)
            ```
        """
        self.on("stats", callback)

    def _maintenance_plan(self, *, periodic: bool = False) -> Plan[MaintenanceResult]:
        return maintain_plan(self._core, self.maintenance_settings, periodic=periodic)

    def _monitor_due(self) -> bool:
        # Counting every job is a scan of the table: only for someone who will look.
        if not self._listeners.wants("stats") and not log.isEnabledFor(logging.INFO):
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
        self._listeners.emit("stats", stats)

    def _declared(self) -> bool:
        """True when every handler's queue and every code schedule is in the database."""
        return self._cron.synced and not self.registry.has_undeclared

    def _worker_for(self, runner: AsyncRunner, **options: Any) -> Worker:
        """``work()`` begins: its worker, made first, so that a stop_working() from now on
        reaches it (the worker keeps a stop asked before it runs)."""
        with self._work_lock:
            if not self._work_done.is_set():
                raise WorkerError("this queue object is already working")
            self._worker = Worker(
                runner,
                self._core,
                listen_dsn=self._listen_to(runner.dsn),
                emit=self._listeners.emit,
                observer=self._observer,
                app_name=self.app_name,
                on_conflict=self.on_conflict,
                **options,
            )
            self._work_done.clear()
            return self._worker

    def _end_work(self) -> None:
        with self._work_lock:
            self._worker = None
            self._work_done.set()

    @property
    def working(self) -> bool:
        """True from the moment :meth:`work` begins until it returns."""
        return not self._work_done.is_set()

    def stop_working(self) -> None:
        """Ask :meth:`work` to finish, from any thread or a signal handler: no new claims,
        running jobs get ``shutdown_timeout`` to end, the runs still held go back to their
        queues, then ``work()`` returns. The object stays started. Does nothing when no
        ``work()`` has begun (an asyncio task that has not run yet has not begun).

        Example:
            ```python
            # work() returns once the running jobs ended or were handed back
            signal.signal(signal.SIGUSR1, lambda *_: pq.stop_working())
            ```
        """
        with self._work_lock:
            worker = self._worker
        if worker is not None:
            worker.stop()

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
