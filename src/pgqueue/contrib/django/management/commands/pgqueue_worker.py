"""``manage.py pgqueue_worker``: run the project's handlers (its ``jobs.py`` modules and
``django.tasks`` tasks) until SIGTERM or SIGINT."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from pgqueue.errors import PgQueueError

from ..._queue import get_queue

__all__ = ["Command"]


class Command(BaseCommand):
    help = (
        "Run pgqueue's workers for this project's handlers. SIGTERM or SIGINT stops "
        "claiming and lets running jobs finish (--shutdown-timeout); a second one stops at once."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--queues", help="comma-separated queues or glob patterns to work (default: all)"
        )
        parser.add_argument(
            "--local-concurrency",
            "--concurrency",
            dest="local_concurrency",
            type=int,
            help="jobs run at once by this process (default: 100)",
        )
        parser.add_argument(
            "--threads", type=int, help="of those, jobs of sync handlers (default: 10)"
        )
        parser.add_argument(
            "--poll-interval", type=float, help="seconds between polls (default: 2)"
        )
        parser.add_argument(
            "--shutdown-timeout",
            type=float,
            help="seconds to let active jobs finish on SIGTERM (default: 30)",
        )
        parser.add_argument(
            "--heartbeat",
            dest="heartbeat_seconds",
            type=float,
            help="seconds of silence after which a run counts as dead (default: 30)",
        )
        parser.add_argument(
            "--capture-logs",
            nargs="?",
            const="info",
            metavar="LEVEL",
            help="store the logging records handlers emit with their runs",
        )
        parser.add_argument(
            "--metrics-port", type=int, help="serve Prometheus metrics on this port"
        )
        parser.add_argument("--metrics-host", help="the metrics' address (default: 0.0.0.0)")
        parser.add_argument(
            "--until-empty",
            action="store_true",
            help="stop once no job is runnable (a drain: for tests and one-off runs)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        queue = get_queue()
        work: dict[str, Any] = dict(queue.config.worker)  # settings.PGQUEUE["WORKER"]
        for name in (
            "local_concurrency",
            "threads",
            "poll_interval",
            "shutdown_timeout",
            "heartbeat_seconds",
            "capture_logs",
            "metrics_port",
            "metrics_host",
        ):
            if options.get(name) is not None:
                work[name] = options[name]
        if options.get("queues"):
            work["queues"] = [q.strip() for q in options["queues"].split(",") if q.strip()]
        if not queue.registry.definitions():
            raise CommandError(
                "no handlers are registered: define them with @pq.job in an installed app's "
                "jobs.py (see PGQUEUE['AUTODISCOVER']), or configure a django.tasks backend"
            )
        try:
            queue.start()
            try:
                queue.work(
                    install_signal_handlers=True,
                    until_empty=bool(options.get("until_empty")),
                    **work,
                )
            finally:
                queue.stop()
        except PgQueueError as exc:
            raise CommandError(str(exc)) from exc
