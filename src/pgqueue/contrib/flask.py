"""Flask extension: a :class:`~pgqueue.PgQueue` per application, configured from
``app.config``, whose handlers run inside the application's context, and a
``flask pgqueue worker`` command. Needs the ``flask`` extra (see docs/flask.md).

    ext = PgQueueFlask()

    @ext.job("welcome", retry_limit=3)
    def welcome(data: dict[str, str]) -> None:
        send_mail(current_app.config["MAIL_FROM"], data["email"])

    def create_app() -> Flask:
        app = Flask(__name__)
        app.config["PGQUEUE_DSN"] = "postgresql://..."
        ext.init_app(app)
        return app

In a view, ``welcome.send({"email": ...})`` sends to the current application's queue.
"""

from __future__ import annotations

import atexit
import functools
import inspect
import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

try:
    import flask  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "pgqueue.contrib.flask needs its extra: pip install 'pgqueue[flask]'"
    ) from exc

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from flask.ctx import AppContext

from .._base import StartAfter
from .._cron import check_cron, check_timezone
from .._handlers import OnConflict
from .._logs import configure
from .._registry import Registry, is_pattern
from .._sync.function import JobDecorator, JobFunction
from .._sync.queue import PgQueue
from .._sync.results import JobHandle
from .._sync.runner import Conn
from .._worker import DEFAULT_CONCURRENCY, DEFAULT_HEARTBEAT, DEFAULT_THREADS
from ..errors import InvalidInputError, InvalidOptionError, PgQueueError

__all__ = ["EXTENSION_KEY", "PgQueueFlask"]

log = logging.getLogger("pgqueue.flask")
# Where init_app keeps an application's state, in ``app.extensions``.
EXTENSION_KEY = "pgqueue"
# The PgQueue options with a configuration key of their own: PGQUEUE_OPTIONS may not repeat them.
_OWN_KEYS = {"dsn": "PGQUEUE_DSN", "schema": "PGQUEUE_SCHEMA", "app_name": "PGQUEUE_APP_NAME"}


@dataclass
class _Registration:
    """One ``@ext.job`` (and the schedules stacked on it), replayed on each application."""

    name: str
    func: Callable[..., Any]
    description: str | None
    local_concurrency: int | None
    defaults: dict[str, Any]
    schedules: list[dict[str, Any]] = field(default_factory=list)


class _AppState:
    """One application's queue object, started on first use."""

    def __init__(self, ext: PgQueueFlask, queue: PgQueue) -> None:
        self.ext = ext
        self.queue = queue
        self.lock = threading.Lock()
        self.started = False
        self.functions: dict[str, JobFunction[Any, Any, Any]] = {}

    def started_queue(self) -> PgQueue:
        if not self.started:
            with self.lock:
                if not self.started:
                    self.queue.start()
                    atexit.register(self.queue.stop)
                    self.started = True
        return self.queue

    def stop(self) -> None:
        with self.lock:
            if self.started:
                self.queue.stop()
                atexit.unregister(self.queue.stop)
                self.started = False


class PgQueueFlask:
    """The pgqueue extension: ``PgQueueFlask(app)``, or ``PgQueueFlask()`` then
    ``init_app(app)`` in an application factory.

    Each application gets a :class:`~pgqueue.PgQueue` from its configuration:
    ``PGQUEUE_DSN`` (default ``$PGQUEUE_DATABASE_URL``, else the embedded server),
    ``PGQUEUE_SCHEMA`` (default ``pgqueue``), ``PGQUEUE_APP_NAME`` (the name handlers are
    registered under, default the application's name) and ``PGQUEUE_OPTIONS`` (a mapping of
    the other ``PgQueue`` options). It starts on first use. Handlers registered with
    :meth:`job` and :meth:`cron` run inside ``app.app_context()``; the jobs they return send
    to the current application's queue. ``flask pgqueue worker`` runs them.

    Example:
        ```python
        pgqueue = PgQueueFlask()

        @pgqueue.job("welcome-email")
        def welcome_email(data: dict[str, str]) -> None:
            print(current_app.config["MAIL_SENDER"], data["email"])

        app = Flask(__name__)
        app.config["PGQUEUE_DSN"] = "postgresql://app@db/app"
        pgqueue.init_app(app)
        with app.app_context():
            welcome_email.send({"email": "ada@example.com"})
        ```
    """

    def __init__(self, app: Flask | None = None) -> None:
        self._template = Registry()  # checks handlers and options where they are declared
        self._registrations: dict[str, _Registration] = {}
        # The applications set up, not kept alive by this: each holds its state in
        # app.extensions (which, through its handlers, refers back to it).
        self._apps: weakref.WeakSet[Flask] = weakref.WeakSet()
        self._lock = threading.Lock()
        self.cli = _worker_group(self)
        if app is not None:
            self.init_app(app)

    # -- applications ------------------------------------------------------------------------

    def init_app(self, app: Flask) -> None:
        """Make ``app``'s queue object from its configuration (it connects on first use),
        register the handlers on it and add the ``flask pgqueue`` commands."""
        if EXTENSION_KEY in app.extensions:
            raise InvalidInputError(f"pgqueue is already set up on application {app.name!r}")
        queue = PgQueue(**_queue_options(app))
        state = _AppState(self, queue)
        with self._lock:
            for registration in self._registrations.values():
                _register_on(app, state, registration)
            self._apps.add(app)
        app.extensions[EXTENSION_KEY] = state
        app.cli.add_command(self.cli)

    def _state(self, app: Flask | None) -> _AppState:
        if app is None:
            try:
                app = current_app._get_current_object()  # type: ignore[attr-defined]
            except RuntimeError:
                raise PgQueueError(
                    "no Flask application context: pass app=, or work inside "
                    "app.app_context() or a request"
                ) from None
        state = app.extensions.get(EXTENSION_KEY)
        if not isinstance(state, _AppState) or state.ext is not self:
            raise PgQueueError(f"pgqueue is not set up on application {app.name!r}: call init_app")
        return state

    def get_queue(self, app: Flask | None = None) -> PgQueue:
        """The queue object of ``app`` (default: the current application), started."""
        return self._state(app).started_queue()

    @property
    def queue(self) -> PgQueue:
        """The current application's queue object, started."""
        return self.get_queue()

    def stop(self, app: Flask | None = None) -> None:
        """Stop ``app``'s queue object (default: the current application's) if it started;
        it starts again on next use. Queues still started are stopped at exit."""
        self._state(app).stop()

    # -- handlers ----------------------------------------------------------------------------

    def job(
        self,
        name: str,
        *,
        description: str | None = None,
        local_concurrency: int | None = None,
        **defaults: Any,
    ) -> JobDecorator:
        """Register the decorated function as the handler of queue ``name`` on every
        application set up with this extension (before or after); it runs inside the
        application's context. Takes what :meth:`PgQueue.job` takes."""

        def register(func: Callable[..., Any]) -> JobFunction[Any, Any, Any]:
            if inspect.isclass(func) or isinstance(func, JobFunction):
                raise InvalidInputError(f"@ext.job takes a function, got {func!r}")
            definition = self._template.register(
                name,
                func,
                description=description,
                concurrency=local_concurrency,
                options=defaults,
            )
            registration = _Registration(name, func, description, local_concurrency, defaults)
            with self._lock:
                self._registrations[name] = registration
                for app in list(self._apps):
                    _register_on(app, app.extensions[EXTENSION_KEY], registration)
            return JobFunction(self, definition)

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
    ) -> JobDecorator:
        """Register the decorated function as a job (queue ``name``, default the function's
        name) sent ``data`` at every slot of ``expression``, as :meth:`PgQueue.cron` does,
        on every application set up with this extension."""
        check_cron(expression)
        check_timezone(tz)

        def register(func: Callable[..., Any]) -> JobFunction[Any, Any, Any]:
            if isinstance(func, JobFunction):
                if (name is not None and name != func.name) or options:
                    raise InvalidInputError(
                        "a stacked @cron takes the name and options of the job it schedules"
                    )
                job = func
            else:
                queue = name or str(getattr(func, "__name__", ""))
                if is_pattern(queue):
                    raise InvalidInputError(
                        f"@cron sends jobs to one queue: {queue!r} is a pattern"
                    )
                job = self.job(queue, description=description, **options)(func)
            schedule = {"expression": expression, "tz": tz, "data": data, "key": key}
            with self._lock:
                self._registrations[job.name].schedules.append(schedule)
                for app in list(self._apps):
                    state = app.extensions[EXTENSION_KEY]
                    state.queue.cron(**schedule)(state.functions[job.name])
            return job

        return register

    # -- sending (what the job functions call) ----------------------------------------------

    def send(
        self, name: str, data: Any = None, *, conn: Conn | None = None, **options: Any
    ) -> JobHandle | None:
        """Send a job with the current application's queue (see :meth:`PgQueue.send`)."""
        return self.queue.send(name, data, conn=conn, **options)

    def send_after(
        self,
        name: str,
        data: Any,
        start_after: StartAfter,
        *,
        conn: Conn | None = None,
        **options: Any,
    ) -> JobHandle | None:
        """Send a job that starts later (see :meth:`PgQueue.send_after`)."""
        return self.queue.send_after(name, data, start_after, conn=conn, **options)

    def insert(
        self, jobs: Iterable[Mapping[str, Any]], *, conn: Conn | None = None
    ) -> list[int | None]:
        """Send many jobs in one statement (see :meth:`PgQueue.insert`)."""
        return self.queue.insert(jobs, conn=conn)


def _queue_options(app: Flask) -> dict[str, Any]:
    """The PgQueue options of ``app``'s configuration; bad ones raise InvalidOptionError."""
    config = app.config
    extra = _setting(config, "PGQUEUE_OPTIONS", {})
    if not isinstance(extra, Mapping):
        raise InvalidOptionError(f"PGQUEUE_OPTIONS must be a mapping, got {extra!r}")
    for option, key in _OWN_KEYS.items():
        if option in extra:
            raise InvalidOptionError(f"give {option} as {key}, not in PGQUEUE_OPTIONS")
    known = set(inspect.signature(PgQueue).parameters) - set(_OWN_KEYS)
    unknown = sorted(set(extra) - known)
    if unknown:
        raise InvalidOptionError("unknown PGQUEUE_OPTIONS " + ", ".join(repr(u) for u in unknown))
    return {
        "dsn": config.get("PGQUEUE_DSN"),
        "schema": _setting(config, "PGQUEUE_SCHEMA", "pgqueue"),
        "app_name": _setting(config, "PGQUEUE_APP_NAME", app.name),
        **extra,
    }


def _setting(config: Mapping[str, Any], key: str, default: Any) -> Any:
    """``config[key]``, or ``default`` when it is missing, None or empty (a value of
    another type, even false, is kept: the queue object refuses it)."""
    value = config.get(key)
    return default if value is None or (isinstance(value, str | Mapping) and not value) else value


def _register_on(app: Flask, state: _AppState, registration: _Registration) -> None:
    """Register a handler on one application's queue, wrapped to run in its context."""
    function = state.queue.job(
        registration.name,
        description=registration.description,
        local_concurrency=registration.local_concurrency,
        **registration.defaults,
    )(_in_context(app, registration.func))
    state.functions[registration.name] = function
    for schedule in registration.schedules:
        state.queue.cron(**schedule)(function)


def _in_context(app: Flask, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func``, called inside ``app.app_context()``; its name, signature and annotations
    kept (the worker reads them). When the handler raises, its error is the run's even if a
    teardown function raises too (that one is logged)."""
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            ctx = app.app_context()
            ctx.push()
            try:
                result = await func(*args, **kwargs)
            except BaseException as exc:
                _pop_after(app, ctx, exc)
                raise
            ctx.pop()
            return result

        return run_async

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        ctx = app.app_context()
        ctx.push()
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            _pop_after(app, ctx, exc)
            raise
        ctx.pop()
        return result

    return run


def _pop_after(app: Flask, ctx: AppContext, exc: BaseException) -> None:
    """Pop the context of a handler that raised ``exc``: a teardown function's own error is
    logged, not raised (it would take the place of the handler's as the run's error)."""
    try:
        ctx.pop(exc)
    except Exception:
        log.exception("a teardown function of Flask application %r failed", app.name)


def _worker_group(ext: PgQueueFlask) -> AppGroup:
    """The ``flask pgqueue`` commands."""
    group = AppGroup("pgqueue", help="pgqueue: run the application's job handlers.")

    @group.command("worker")
    @click.option("--queues", help="Comma-separated queues or glob patterns (default: all).")
    @click.option(
        "--local-concurrency",
        "--concurrency",
        "concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        show_default=True,
        help="Jobs run at once by this process.",
    )
    @click.option(
        "--threads",
        type=int,
        default=DEFAULT_THREADS,
        show_default=True,
        help="Of those, jobs of sync handlers (one thread each).",
    )
    @click.option(
        "--poll-interval",
        type=float,
        default=2.0,
        show_default=True,
        help="Seconds between polls when no notification comes.",
    )
    @click.option(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        show_default=True,
        help="Seconds active jobs get to finish on SIGTERM.",
    )
    @click.option(
        "--heartbeat",
        type=float,
        default=DEFAULT_HEARTBEAT,
        show_default=True,
        help="Seconds of silence after which a run counts as dead.",
    )
    @click.option(
        "--capture-logs", metavar="LEVEL", help="Store handlers' log records of LEVEL up."
    )
    @click.option("--until-empty", is_flag=True, help="Stop once no job is runnable.")
    @click.option(
        "--metrics-port",
        type=int,
        help="Serve Prometheus metrics at /metrics on this port (needs pgqueue[metrics]).",
    )
    @click.option("--metrics-host", default="0.0.0.0", show_default=True)
    @click.option("--health-port", type=int, help="Answer GET /healthz and /readyz on this port.")
    @click.option("--health-host", default="0.0.0.0", show_default=True)
    @click.option(
        "--health-timeout",
        type=float,
        help="Seconds without a successful statement before /healthz answers 503 (default: "
        "the longest of 30, three poll intervals and the heartbeat).",
    )
    @click.option(
        "--on-conflict",
        type=click.Choice(["warn", "error"]),
        help="Refuse to start when another app registered a different handler for one of "
        "its queues (error), or warn (default: PGQUEUE_OPTIONS', else warn).",
    )
    @click.option(
        "--log-level",
        default="info",
        show_default=True,
        type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    )
    def worker(
        queues: str | None,
        concurrency: int,
        threads: int,
        poll_interval: float,
        shutdown_timeout: float,
        heartbeat: float,
        capture_logs: str | None,
        until_empty: bool,
        metrics_port: int | None,
        metrics_host: str,
        health_port: int | None,
        health_host: str,
        health_timeout: float | None,
        on_conflict: OnConflict | None,
        log_level: str,
    ) -> None:
        """Run the application's job handlers until SIGTERM or SIGINT."""
        configure(log_level, "plain", capture=capture_logs)
        try:
            queue = ext.queue
            if on_conflict is not None:
                queue.on_conflict = on_conflict
            queue.work(
                queues=queues.split(",") if queues else None,
                local_concurrency=concurrency,
                threads=threads,
                poll_interval=poll_interval,
                shutdown_timeout=shutdown_timeout,
                heartbeat_seconds=heartbeat,
                capture_logs=capture_logs or False,
                until_empty=until_empty,
                metrics_port=metrics_port,
                metrics_host=metrics_host,
                health_port=health_port,
                health_host=health_host,
                health_timeout=health_timeout,
                install_signal_handlers=True,
            )
        except (PgQueueError, ImportError) as exc:  # (an extra --metrics-port needs)
            raise click.ClickException(str(exc)) from exc
        finally:
            ext.stop()

    return group
