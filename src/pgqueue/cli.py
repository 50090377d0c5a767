"""The ``pgqueue`` command: migrate the schema, run workers, send jobs, and look after
queues and jobs (stats, one job, retry, cancel, resume, pause)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

from ._async.queue import AsyncPgQueue
from ._compat import run_loop
from ._config import DSN_ENV, check_seconds
from ._cron import label, next_slot
from ._health import check_port
from ._logs import configure
from ._sync.queue import PgQueue
from ._version import VERSION
from ._worker import DEFAULT_CONCURRENCY, DEFAULT_HEARTBEAT, DEFAULT_THREADS
from .errors import (
    InvalidInputError,
    InvalidOptionError,
    InvalidPayloadError,
    JobFailedError,
    PgQueueError,
    ResultTimeoutError,
)
from .models import Job, JobState, QueueStats

__all__ = ["build_parser", "main"]

Command = Callable[[argparse.Namespace], int]


def prepare_option(sub: argparse.ArgumentParser) -> None:
    """``--no-prepare``: for a pooler that cannot carry prepared statements."""
    sub.add_argument(
        "--no-prepare",
        dest="prepare",
        action="store_const",
        const=False,
        default=None,
        help="never prepare statements (needed behind PgBouncer in transaction mode before "
        "1.21, or with max_prepared_statements = 0)",
    )


def listen_options(sub: argparse.ArgumentParser) -> None:
    """``--listen-dsn`` and ``--no-listen``: where notifications are listened for."""
    sub.add_argument(
        "--listen-dsn",
        help="database URL of the notification listener (default: the application's; "
        "behind PgBouncer in transaction mode, a direct one to PostgreSQL)",
    )
    sub.add_argument(
        "--no-listen",
        dest="listen",
        action="store_const",
        const=False,
        default=None,
        help="listen for no notifications: poll only",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    # The log options, before the command or after it (the later one wins), in any case.
    logs = argparse.ArgumentParser(add_help=False)
    logs.add_argument(
        "--log-level",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        default=argparse.SUPPRESS,
        help="the least severe log records shown (default: INFO)",
    )
    logs.add_argument(
        "--log-format",
        type=str.lower,
        choices=["plain", "json"],
        default=argparse.SUPPRESS,
        help="plain lines, or one JSON object per line (default: plain)",
    )
    parser = argparse.ArgumentParser(prog="pgqueue", description=__doc__, parents=[logs])
    parser.add_argument("--version", action="version", version=f"pgqueue {VERSION}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = commands.add_parser(name, parents=[logs], **kwargs)
        return sub

    def database_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--dsn", help=f"database URL (default: ${DSN_ENV}, else embedded)")
        sub.add_argument("--schema", default="pgqueue", help="schema name (default: pgqueue)")
        prepare_option(sub)

    def pool_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--pool-size",
            type=int,
            metavar="N",
            help="connections the process's pool may open at most, besides one for LISTEN "
            "(default: the application's pool_max_size, 10 unless set)",
        )
        sub.add_argument(
            "--pool-min-size",
            type=int,
            metavar="N",
            help="connections the pool keeps open when idle (default: the application's, 1)",
        )
        sub.add_argument(
            "--null-pool",
            action="store_true",
            help="open a connection for each use and close it after (behind PgBouncer)",
        )

    migrate = command("migrate", help="create or upgrade pgqueue's schema")
    database_options(migrate)
    migrate.add_argument(
        "--status",
        action="store_true",
        help="report the schema version and pending migrations only",
    )
    migrate.add_argument(
        "--partition",
        action="store_true",
        default=None,
        help="create a new schema with the job table partitioned by queue "
        "(default: $PGQUEUE_PARTITION; an existing schema keeps its layout)",
    )
    migrate.add_argument("--json", action="store_true", help="report as JSON")
    migrate.set_defaults(run=_migrate)

    worker = command("worker", help="run the handlers of an application")
    worker.add_argument("app", help="the queue object, as module:attribute (myapp.jobs:pq)")
    worker.add_argument(
        "--queues", help="comma-separated queues or glob patterns to work (default: all)"
    )
    worker.add_argument(
        "--local-concurrency",
        "--concurrency",
        dest="concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help=f"jobs run at once by this process (default: {DEFAULT_CONCURRENCY}); a "
        "queue's limit across workers is its own concurrency option",
    )
    worker.add_argument(
        "--threads",
        type=int,
        default=DEFAULT_THREADS,
        help=f"of those, jobs of sync handlers, one thread each (default: {DEFAULT_THREADS})",
    )
    worker.add_argument(
        "--poll-interval",
        type=float,
        default=2.0,
        help="seconds between polls when no notification comes (default: 2)",
    )
    worker.add_argument(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        help="seconds to let active jobs finish on SIGTERM (default: 30)",
    )
    worker.add_argument(
        "--heartbeat",
        type=float,
        default=DEFAULT_HEARTBEAT,
        help="seconds of silence after which a run counts as dead and its "
        f"job runs again elsewhere (default: {DEFAULT_HEARTBEAT:g})",
    )
    worker.add_argument(
        "--capture-logs",
        nargs="?",
        const="info",
        metavar="LEVEL",
        help="store the logging records handlers emit (of LEVEL and above, default info) "
        "with their runs, beside their job.log() lines",
    )
    worker.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics at /metrics on this port (needs pgqueue[metrics])",
    )
    worker.add_argument(
        "--metrics-host",
        default="0.0.0.0",
        help="the address the metrics are served on (default: 0.0.0.0, every interface)",
    )
    worker.add_argument(
        "--health-port",
        type=int,
        default=None,
        help="serve GET /healthz (200 while alive, else 503 saying why) and GET /readyz "
        "(200 while taking jobs, 503 while starting or stopping) on this port",
    )
    worker.add_argument(
        "--health-host",
        default="0.0.0.0",
        help="the address the health checks are served on (default: 0.0.0.0, every interface)",
    )
    worker.add_argument(
        "--health-timeout",
        type=float,
        default=None,
        help="seconds without a successful statement before /healthz answers 503 "
        "(default: the longest of 30, three poll intervals and the heartbeat)",
    )
    pool_options(worker)
    prepare_option(worker)
    listen_options(worker)
    worker.add_argument(
        "--on-conflict",
        choices=["warn", "error"],
        help="when another app registered a different handler for one of its queues on "
        "this schema: warn (the default) or refuse to start (default: the application's)",
    )
    worker.set_defaults(run=_worker)

    jobs = command(
        "jobs",
        help="list an application's jobs and their options (jobs APP), or the jobs in the "
        "database that match filters (jobs list)",
    )
    jobs.add_argument("app", help="the queue object, as module:attribute; or: list")
    database_options(jobs)
    jobs.add_argument("--queue", help="jobs of this queue")
    jobs.add_argument(
        "--state", action="append", help="jobs in this state (repeat it, or a,b, for several)"
    )
    jobs.add_argument("--key", help="jobs of this singleton key")
    jobs.add_argument("--group", help="jobs of this group")
    jobs.add_argument("--data", help="jobs whose data contains this JSON object")
    jobs.add_argument("--limit", type=int, default=100, help="at most this many (default: 100)")
    jobs.add_argument("--after", type=int, default=0, help="jobs after this id (the next page)")
    jobs.add_argument("--archived", action="store_true", help="look in the archive too")
    jobs.add_argument(
        "--json", action="store_true", help="one JSON object per job (or registered job)"
    )
    jobs.set_defaults(run=_jobs)

    send = command("send", help="send a job of an application by name")
    send.add_argument("app", help="the queue object, as module:attribute")
    send.add_argument("name", help="the job (queue) name")
    send.add_argument("--data", default="null", help="the job's data as JSON (default: null)")
    send.add_argument(
        "--wait", action="store_true", help="wait until a worker finishes it, then print its output"
    )
    send.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait with --wait (default: 60)"
    )
    prepare_option(send)
    listen_options(send)
    send.set_defaults(run=_send)

    queues = command("queues", help="every queue: its jobs per state, paused or not")
    database_options(queues)
    queues.add_argument("--json", action="store_true", help="one JSON object per queue")
    queues.add_argument(
        "--watch",
        nargs="?",
        const=2.0,
        type=float,
        metavar="SECONDS",
        help="show them again every SECONDS (default 2) with the jobs completed and failed "
        "per second since the last look, until interrupted",
    )
    queues.set_defaults(run=_queues)
    groups = command(
        "groups", help="a grouped queue's groups with the most waiting jobs, and their limits"
    )
    groups.add_argument("queue")
    database_options(groups)
    groups.add_argument("--json", action="store_true", help="one JSON object per group")
    groups.set_defaults(run=_groups)

    schedules = command("schedules", help="the cron schedules: next slot, last sent")
    database_options(schedules)
    schedules.add_argument("--json", action="store_true", help="one JSON object per schedule")
    schedules.set_defaults(run=_schedules)
    subscriptions = command("subscriptions", help="the queues each event is published to")
    database_options(subscriptions)
    subscriptions.add_argument("--json", action="store_true", help="one JSON object per pair")
    subscriptions.set_defaults(run=_subscriptions)
    handlers = command(
        "handlers",
        help="the handler registry: which app's workers serve which handler for each queue, "
        "conflicts marked",
    )
    database_options(handlers)
    handlers.add_argument("--json", action="store_true", help="one JSON object per handler")
    handlers.set_defaults(run=_handlers)

    show = command("job", help="one job (looking in the archive too), as JSON")
    database_options(show)
    show.add_argument("id", type=int)
    show.add_argument(
        "--logs", action="store_true", help="print what its attempts logged, as text lines"
    )
    show.set_defaults(run=_show_job)

    for name, verb, what in (
        ("retry", "retry", "run failed or expired jobs again"),
        ("cancel", "cancel", "cancel created, retry or active jobs"),
        ("resume", "resume", "send cancelled jobs back to created"),
    ):
        sub = command(name, help=f"{what}: by id, or all those of --queue and --state")
        database_options(sub)
        sub.add_argument("ids", type=int, nargs="*", metavar="ID")
        sub.add_argument("--queue", help="the jobs of this queue (with no ids)")
        sub.add_argument(
            "--state", help="...in these states, as a,b (default: every state it applies to)"
        )
        sub.set_defaults(run=_job_action, verb=verb)

    grant = command(
        "grant", help="let a role run workers and producers on the schema (run as its owner)"
    )
    database_options(grant)
    grant.add_argument("role")
    grant.set_defaults(run=_grant)

    dashboard = command(
        "dashboard", help="serve the web dashboard of an application (pgqueue[dashboard])"
    )
    dashboard.add_argument("app", help="the queue object, as module:attribute")
    dashboard.add_argument("--dsn", help="database URL (default: the application's)")
    dashboard.add_argument("--schema", help="schema name (default: the application's)")
    prepare_option(dashboard)
    dashboard.add_argument(
        "--read-dsn",
        help="database URL of a replica (hot standby) for the pages' reads; actions still "
        "go to --dsn",
    )
    dashboard.add_argument("--host", default="127.0.0.1", help="address (default: 127.0.0.1)")
    dashboard.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    dashboard.add_argument("--title", default="pgqueue", help="the pages' title")
    dashboard.add_argument(
        "--counts-max-age",
        type=float,
        default=5.0,
        help="seconds a count of the queues' jobs is reused (default: 5; 0: count at "
        "every request)",
    )
    dashboard.add_argument(
        "--read-only", action="store_true", help="show everything, refuse every action"
    )
    dashboard.add_argument(
        "--metrics",
        action="store_true",
        help="serve Prometheus metrics at /metrics too, behind the same auth (pgqueue[metrics])",
    )
    dashboard.add_argument(
        "--allowed-host",
        action="append",
        metavar="NAME",
        help="a Host name the dashboard answers to (repeatable; '*': any); default: any, "
        "but with --no-auth only localhost, 127.0.0.1, [::1] and --host",
    )
    who = dashboard.add_mutually_exclusive_group()
    who.add_argument("--token", help="require this bearer token (or sign in with it)")
    who.add_argument("--basic-auth", metavar="USER:PASS", help="require basic auth")
    who.add_argument("--no-auth", action="store_true", help="serve anyone who can reach the port")
    dashboard.set_defaults(run=_dashboard)

    for name, paused in (("pause", True), ("unpause", False)):
        sub = command(
            name,
            help="stop workers claiming a queue's jobs"
            if paused
            else "let workers claim a paused queue's jobs again",
        )
        database_options(sub)
        sub.add_argument("queue")
        sub.set_defaults(run=_pause, paused=paused)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    configure(
        getattr(args, "log_level", "INFO"),
        getattr(args, "log_format", "plain"),
        # records below the level printed are still made for the runs' logs to capture
        capture=getattr(args, "capture_logs", None),
    )
    run: Command = args.run
    try:
        return run(args)
    except PgQueueError as exc:
        print(f"pgqueue: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (| head): stop quietly
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _migrate(args: argparse.Namespace) -> int:
    # No maintenance: it would run against a schema that may not be installed yet.
    pq = PgQueue(
        args.dsn,
        schema=args.schema,
        migrate=False,
        maintenance=False,
        prepare=args.prepare is not False,
        partition=args.partition,
    )
    if args.status:
        with pq:
            status = pq.migration_status()
        if args.json:
            pending = [f"{m.version:04d}_{m.name}" for m in status.pending]
            fields = {"schema": args.schema, "current": status.current, "latest": status.latest}
            print(json.dumps({**fields, "pending": pending}))
            return 0
        current = "not installed" if status.current is None else str(status.current)
        print(f"schema {args.schema}: version {current}, latest {status.latest}")
        for migration in status.pending:
            print(f"pending: {migration.version:04d}_{migration.name}")
        return 0
    try:
        applied = pq.migrate()
    finally:
        pq.stop()  # stops an embedded server it started
    if args.json:
        print(json.dumps({"schema": args.schema, "applied": applied}))
    elif applied:
        print(f"schema {args.schema}: applied {', '.join(str(v) for v in applied)}")
    else:
        print(f"schema {args.schema}: up to date")
    return 0


def load_app(spec: str) -> AsyncPgQueue | PgQueue:
    """Import ``module:attribute`` (from the current directory too) and return the queue."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise PgQueueError(f"app must be module:attribute, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PgQueueError(f"cannot import {module_name!r}: {exc}") from exc
    app: Any = module
    for part in attribute.split("."):
        app = getattr(app, part, None)
    if not isinstance(app, AsyncPgQueue | PgQueue):
        raise PgQueueError(f"{spec} is not an AsyncPgQueue or PgQueue (got {type(app).__name__})")
    return app


def _app_connections(app: AsyncPgQueue | PgQueue, args: argparse.Namespace) -> None:
    """Apply the connection flags given to the application's queue object."""
    if getattr(args, "listen", None) is False and getattr(args, "listen_dsn", None):
        raise InvalidOptionError("--no-listen polls only: drop --listen-dsn")
    app._configure_connections(
        prepare=args.prepare,
        listen=getattr(args, "listen", None),
        listen_dsn=getattr(args, "listen_dsn", None),
    )


def _worker(args: argparse.Namespace) -> int:
    if args.health_port is not None:  # before connecting: a bad port is refused at once
        check_port("--health-port", args.health_port)
    app = load_app(args.app)
    _size_pool(app, args)
    _app_connections(app, args)
    if args.on_conflict is not None:
        app.on_conflict = args.on_conflict
    options: dict[str, Any] = {
        "queues": args.queues.split(",") if args.queues else None,
        "concurrency": args.concurrency,
        "threads": args.threads,
        "poll_interval": args.poll_interval,
        "shutdown_timeout": args.shutdown_timeout,
        "heartbeat_seconds": args.heartbeat,
        "capture_logs": args.capture_logs or False,
        "install_signal_handlers": True,
    }
    if args.metrics_port is not None:
        try:
            from . import metrics  # noqa: F401  (before the app starts: its extra may be missing)
        except ImportError as exc:
            raise PgQueueError(str(exc)) from None
        options.update(metrics_port=args.metrics_port, metrics_host=args.metrics_host)
    if args.health_port is not None:
        options.update(health_port=args.health_port, health_host=args.health_host)
    if args.health_timeout is not None:
        options.update(health_timeout=args.health_timeout)
    if isinstance(app, PgQueue):
        with app:
            app.work(**options)
        return 0

    async def run() -> None:
        async with app:
            await app.work(**options)

    run_loop(run())
    return 0


def _size_pool(app: AsyncPgQueue | PgQueue, args: argparse.Namespace) -> None:
    """Apply --pool-size, --pool-min-size and --null-pool to an application's object."""
    if args.pool_size is None and args.pool_min_size is None and not args.null_pool:
        return
    if args.null_pool and args.pool_min_size:
        raise InvalidOptionError("--null-pool keeps no connection open: drop --pool-min-size")
    max_size = app._pool_max_size if args.pool_size is None else args.pool_size
    min_size = app._pool_min_size if args.pool_min_size is None else args.pool_min_size
    app._configure_connections(
        pool_min_size=min(min_size, max_size) if args.pool_min_size is None else min_size,
        pool_max_size=max_size,
        null_pool=args.null_pool or app._null_pool,
    )


def _jobs(args: argparse.Namespace) -> int:
    if args.app == "list":
        return _list_jobs(args)
    app = load_app(args.app)
    for definition in app.registry.definitions():
        if args.json:
            fields = {
                "name": definition.name,
                "description": definition.description,
                "options": definition.options,
                "concurrency": definition.concurrency,
            }
            print(json.dumps(fields, default=str))
            continue
        options = ", ".join(f"{k}={v!r}" for k, v in sorted(definition.options.items()))
        extra = f" (concurrency {definition.concurrency})" if definition.concurrency else ""
        print(f"{definition.name}{extra}: {definition.description or '-'}")
        if options:
            print(f"    {options}")
    return 0


def _send(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    try:
        data = json.loads(args.data)
    except json.JSONDecodeError as exc:
        raise InvalidPayloadError(f"--data is not JSON: {exc}") from None
    wait_for = check_seconds("--timeout", args.timeout)
    _app_connections(app, args)
    sync = PgQueue(app.dsn, schema=app.schema, maintenance=False, **app._connections())
    sync.registry = app.registry
    with sync:  # a job of the app's is validated by its model and gets its defaults
        job_id = sync.send(args.name, data)
        if job_id is None:
            print(f"{args.name}: not sent (a singleton or policy blocked it)")
            return 1
        print(f"sent {args.name} job {job_id}", file=sys.stderr)
        if not args.wait:
            print(job_id)
            return 0
        deadline = time.monotonic() + wait_for
        progress = None
        while True:
            try:
                output = job_id.result(timeout=max(min(1.0, deadline - time.monotonic()), 0))
            except JobFailedError as failed:
                print(json.dumps(failed.error, indent=2, default=str))
                print(f"pgqueue: {failed}", file=sys.stderr)
                return 1
            except ResultTimeoutError:
                job = sync.get_job_by_id(job_id)
                if (
                    job is not None
                    and job.last_progress is not None
                    and job.last_progress != progress
                ):
                    progress = job.last_progress
                    print(f"progress: {json.dumps(progress, default=str)}", file=sys.stderr)
                if time.monotonic() >= deadline:
                    state = job.state.value if job else "gone"
                    print(f"job {job_id} is still {state}", file=sys.stderr)
                    return 1
                continue
            print(json.dumps(output, indent=2, default=str))
            return 0


@contextlib.contextmanager
def _operator_queue(args: argparse.Namespace) -> Iterator[PgQueue]:
    # An operator's session: no maintenance or cron of its own, and never a migration.
    with PgQueue(
        args.dsn,
        schema=args.schema,
        migrate=False,
        maintenance=False,
        prepare=args.prepare is not False,
    ) as pq:
        status = pq.migration_status()
        if status.current is None:
            raise PgQueueError(
                f"schema {args.schema} is not installed here: run `pgqueue migrate` first"
            )
        if status.pending:
            raise PgQueueError(
                f"schema {args.schema} is at version {status.current}, this "
                f"pgqueue needs {status.latest}: run `pgqueue migrate` first"
            )
        yield pq


def _queues(args: argparse.Namespace) -> int:
    every: float | None = args.watch
    if every is not None and not 0.1 <= every <= 86_400:  # NaN fails this too
        raise InvalidInputError(f"--watch takes 0.1 to 86400 seconds, got {every:g}")
    with _operator_queue(args) as pq:
        if every is None:
            _show_queues(pq, args.json, None)
            return 0
        # Ctrl-C (or SIGTERM) ends the watch between two looks: never inside a statement,
        # whose connection an interruption would leave for the pool to clean up.
        stop = threading.Event()
        kept = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in _STOP_SIGNALS}
        try:
            last: _Look | None = None
            while not stop.is_set():
                try:
                    last = _show_queues(pq, args.json, last, every)
                except PgQueueError as exc:
                    if not exc.transient:
                        raise
                    print(f"pgqueue: {exc}; looking again in {every:g} s", file=sys.stderr)
                stop.wait(every)  # the pace of the display
            return 0
        finally:
            for sig, handler in kept.items():
                signal.signal(sig, handler)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


# A look at the queues: when (monotonic seconds), and each queue's completed and failed.
_Look = tuple[float, dict[str, tuple[int, int]]]


def _show_queues(
    pq: PgQueue, as_json: bool, last: _Look | None, every: float | None = None
) -> _Look:
    """Print the queues (with the jobs ended per second since ``last``, when watching)."""
    paused = {q.name: q.paused for q in pq.get_queues()}
    stats = pq.get_queue_stats()
    now = time.monotonic()
    ended = {q.name: (q.counts[JobState.completed], q.counts[JobState.failed]) for q in stats}
    rates: dict[str, tuple[float, ...]] = {}
    if last is not None:  # archived jobs leave these counts: a rate never goes below 0
        seconds = max(now - last[0], 1e-9)
        rates = {
            name: tuple(max(n - b, 0) / seconds for n, b in zip(counts, last[1][name], strict=True))
            for name, counts in ended.items()
            if name in last[1]
        }
    if as_json:
        for queue in stats:
            fields = dataclasses.asdict(queue)
            fields["counts"] = {state.value: n for state, n in queue.counts.items()}
            fields.update(
                waiting=queue.waiting, active=queue.active, paused=paused.get(queue.name, False)
            )
            if queue.name in rates:
                fields["completed_per_second"], fields["failed_per_second"] = rates[queue.name]
            print(json.dumps(fields, default=str))
    else:
        if every is not None:
            if sys.stdout.isatty():
                print("\x1b[H\x1b[2J", end="")  # a fresh screen for each look
            print(f"{_iso(pq.now())}  (every {every:g} s)")
        _print_table(_queue_rows(stats, paused, rates if every is not None else None))
    sys.stdout.flush()
    return now, ended


def _queue_rows(
    stats: list[QueueStats],
    paused: dict[str, bool],
    rates: dict[str, tuple[float, ...]] | None,
) -> list[tuple[str, ...]]:
    head = ("queue", "waiting", "active", "completed", "failed", "oldest waiting", "rate", "paused")
    rows = [head + (("done/s", "failed/s") if rates is not None else ())]
    for queue in stats:
        oldest = queue.oldest_waiting_seconds
        row: tuple[str, ...] = (
            queue.name,
            str(queue.waiting),
            f"{queue.active}/{queue.concurrency}" if queue.concurrency else str(queue.active),
            str(queue.counts[JobState.completed]),
            str(queue.counts[JobState.failed]),
            "-" if oldest is None else f"{oldest:.0f} s",
            _rate_cell(queue.rate_limit, queue.rate_left),
            "yes" if paused.get(queue.name) else "no",
        )
        if rates is not None:
            done, failed = rates.get(queue.name, (None, None))
            row += tuple("-" if r is None else f"{r:.1f}" for r in (done, failed))
        rows.append(row)
    return rows


def _schedules(args: argparse.Namespace) -> int:
    with _operator_queue(args) as pq:
        schedules, now = pq.get_schedules(), pq.now()
    rows = [("queue", "key", "cron", "time zone", "next slot", "last sent")]
    for info in schedules:
        try:
            upcoming: datetime | None = next_slot(info.cron, info.tz, now)
        except PgQueueError as exc:  # a row written by hand, or a zone this host lacks
            print(f"pgqueue: schedule {label(info)}: {exc}", file=sys.stderr)
            upcoming = None
        if args.json:
            fields = dataclasses.asdict(info)
            print(json.dumps({**fields, "next_slot": upcoming}, default=_iso))
            continue
        rows.append(
            (
                info.name,
                info.key or "-",
                info.cron,
                info.tz,
                "-" if upcoming is None else _iso(upcoming),
                "-" if info.last_slot is None else _iso(info.last_slot),
            )
        )
    if not args.json:
        _print_table(rows)
    return 0


def _subscriptions(args: argparse.Namespace) -> int:
    with _operator_queue(args) as pq:
        pairs = pq.get_subscriptions()
    for event, queue in pairs:
        print(json.dumps({"event": event, "queue": queue}) if args.json else f"{event} -> {queue}")
    return 0


def _handlers(args: argparse.Namespace) -> int:
    with _operator_queue(args) as pq:
        found = pq.get_handlers()
    # Recent rows of one queue name from apps with different handlers: each takes the
    # others' jobs (patterns against names are the worker's check, see docs/operations.md).
    fingerprints: dict[str, set[str]] = {}
    for info in found:
        if info.recent:
            fingerprints.setdefault(info.name, set()).add(info.fingerprint)
    rows = [("queue", "app", "handler", "worker", "last seen", "conflict")]
    for info in found:
        conflict = info.recent and len(fingerprints.get(info.name, ())) > 1
        if args.json:
            print(json.dumps({**dataclasses.asdict(info), "conflict": conflict}, default=_iso))
            continue
        seen = _iso(info.seen_at) + ("" if info.recent else " (stale)")
        rows.append(
            (info.name, info.app, info.handler, info.worker, seen, "yes" if conflict else "-")
        )
    if not args.json:
        _print_table(rows)
    return 0


def _groups(args: argparse.Namespace) -> int:
    with _operator_queue(args) as pq:
        found = pq.get_queue_stats(args.queue)
    if not found:
        print(f"pgqueue: no queue {args.queue}", file=sys.stderr)
        return 1
    (queue,) = found
    limit = 1 if queue.ordered else queue.group_concurrency
    rate = queue.group_rate_limit
    if limit is None and rate is None:
        print(f"pgqueue: queue {queue.name} has no groups", file=sys.stderr)
        return 1
    if args.json:
        for group, counts in queue.groups.items():
            print(json.dumps({"group": group, **counts._asdict()}))
        return 0
    rows = [("group", "waiting", "active", "rate")]
    for group, counts in queue.groups.items():
        rows.append(
            (
                group if group.isprintable() and group.strip() == group and group else repr(group),
                str(counts.waiting),
                f"{counts.active}/{limit}" if limit else str(counts.active),
                _rate_cell(rate, counts.rate_left),
            )
        )
    _print_table(rows)
    return 0


def _rate_cell(limit: tuple[int, float] | None, left: int | None) -> str:
    """A rate limit and the starts it allows now, for a table."""
    return "-" if limit is None else f"{limit[0]}/{limit[1]:g}s ({left} left)"


def _iso(value: object) -> str:
    """A time as ISO 8601 to the second (anything else as its text)."""
    return value.isoformat(timespec="seconds") if isinstance(value, datetime) else str(value)


def _print_table(rows: Sequence[tuple[str, ...]]) -> None:
    """Print ``rows`` as aligned columns; on a terminal, the widest columns are cut (with
    an ellipsis) until a row fits its width."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    if sys.stdout.isatty():
        room = shutil.get_terminal_size().columns - 2 * (len(widths) - 1)
        while sum(widths) > room and max(widths) > 8:
            widest = widths.index(max(widths))
            widths[widest] = max(8, widths[widest] - (sum(widths) - room))
    for row in rows:
        cells = [
            cell if len(cell) <= width else cell[: width - 1] + "…"
            for cell, width in zip(row, widths, strict=True)
        ]
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())


def _list_jobs(args: argparse.Namespace) -> int:
    states = [s for given in args.state or [] for s in given.split(",")] or None
    data = None
    if args.data is not None:
        try:
            data = json.loads(args.data)
        except json.JSONDecodeError as exc:
            raise InvalidPayloadError(f"--data is not JSON: {exc}") from None
    with _operator_queue(args) as pq:
        jobs = pq.find_jobs(
            args.queue,
            state=states,
            key=args.key,
            group=args.group,
            data_contains=data,
            limit=args.limit,
            after=args.after,
            archived=args.archived,
        )
    if args.json:
        for job in jobs:
            print(json.dumps(_job_fields(job, found=True), default=str))
        return 0
    rows: list[tuple[str, ...]] = [
        ("id", "queue", "state", "attempt", "created", "started", "ended", "key", "group")
    ]
    for job in jobs:
        times = (job.created_at, job.started_at, job.completed_at)
        rows.append(
            (
                str(job.id),
                job.name,
                job.state.value + (" (archived)" if job.archived else ""),
                str(job.attempt),
                *("-" if t is None else _iso(t) for t in times),
                job.singleton_key or "-",
                job.group or "-",
            )
        )
    _print_table(rows)
    return 0


def _job_fields(job: Job, found: bool = False) -> dict[str, Any]:
    """A job as JSON fields; ``found`` by find_jobs, without those only get_job_by_id reads
    (its logs, children and parents left)."""
    fields = dataclasses.asdict(job)
    for name in ("extra", *(("logs", "children", "parents_left") if found else ())):
        fields.pop(name, None)
    return fields


def _show_job(args: argparse.Namespace) -> int:
    with _operator_queue(args) as pq:
        job = pq.get_job_by_id(args.id)
    if job is None:
        print(f"pgqueue: no job {args.id}", file=sys.stderr)
        return 1
    if not args.logs:
        print(json.dumps(_job_fields(job), indent=2, default=str))
        return 0
    if not job.logs:
        print(f"job {job.id} has logged nothing", file=sys.stderr)
        return 0
    for entry in job.logs:
        dropped = entry.get("dropped") or 0
        print(
            f"-- attempt {entry['attempt']}"
            + (f" ({dropped} earlier lines dropped)" * bool(dropped))
        )
        for line in entry["lines"]:
            # A message's own lines are indented and its control characters shown escaped,
            # so that a stored line can neither pass for another nor drive the terminal.
            text = "\n    ".join(map(_printable, str(line["message"]).split("\n")))
            print(f"{line['at']} {str(line['level']).upper():8} {text}")
    return 0


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() or c == "\t" else repr(c)[1:-1] for c in text)


def _job_action(args: argparse.Namespace) -> int:
    if bool(args.ids) == bool(args.queue) or (args.state and not args.queue):
        raise InvalidInputError(f"{args.verb} takes job ids, or --queue (and --state)")
    with _operator_queue(args) as pq:
        ids: list[int] = args.ids
        if args.queue:
            ids, after = [], 0
            states = args.state.split(",") if args.state else _ACTION_STATES[args.verb]
            while page := pq.find_jobs(args.queue, state=states, limit=10_000, after=after):
                ids += [job.id for job in page]
                after = page[-1].id
        done: list[int] = getattr(pq, args.verb)(ids)
    skipped = sorted(set(ids) - set(done))
    print(
        f"{args.verb}: {len(done)} of {len(ids)} jobs"
        + (f" (not in a state that allows it: {_some(skipped)})" if skipped else "")
    )
    return 0 if not skipped else 1


# The states each action applies to: the jobs of a queue it takes when given no --state.
_ACTION_STATES = {
    "retry": ["failed", "expired"],
    "cancel": ["created", "retry", "active"],
    "resume": ["cancelled"],
}


def _some(ids: list[int], most: int = 20) -> str:
    """Ids for a message: the first ``most``, and how many more."""
    more = f" and {len(ids) - most} more" if len(ids) > most else ""
    return ", ".join(map(str, ids[:most])) + more


def _grant(args: argparse.Namespace) -> int:
    with _operator_queue(args) as pq:
        pq.grant(args.role)
    print(f"role {args.role} may now run pgqueue on schema {args.schema}")
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    if not (args.token or args.basic_auth or args.no_auth):
        raise InvalidInputError(
            "the dashboard needs --token, --basic-auth USER:PASS, or --no-auth (to serve "
            "anyone who can reach it)"
        )
    try:
        from .dashboard._serve import serve
    except ImportError:
        raise PgQueueError(
            "the dashboard needs its extra: pip install 'pgqueue[dashboard]'"
        ) from None
    return serve(lambda: load_app(args.app), args)


def _pause(args: argparse.Namespace) -> int:
    with _operator_queue(args) as pq:
        if args.paused:
            pq.pause_queue(args.queue)
        else:
            pq.resume_queue(args.queue)
    print(f"queue {args.queue}: {'paused' if args.paused else 'claimed from again'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
