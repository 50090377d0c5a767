"""``manage.py pgqueue_migrate``: create or upgrade pgqueue's schema (``manage.py
migrate`` does it too, unless ``PGQUEUE["MIGRATE"]`` is False)."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from pgqueue.errors import PgQueueError

from ..._queue import get_queue

__all__ = ["Command"]


class Command(BaseCommand):
    help = "Create or upgrade pgqueue's schema in the database settings.PGQUEUE names."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--status",
            action="store_true",
            help="report the schema's version and pending migrations only",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        queue = get_queue()
        try:
            if options["status"]:
                status = queue.migration_status()
                pending = ", ".join(str(m.version) for m in status.pending) or "none"
                self.stdout.write(
                    f"schema {queue.schema}: version {status.current} of {status.latest}; "
                    f"pending: {pending}"
                )
                return
            applied = queue.migrate()
        except PgQueueError as exc:
            raise CommandError(str(exc)) from exc
        if applied:
            self.stdout.write(f"migrated schema {queue.schema} to version {applied[-1]}")
        else:
            self.stdout.write(f"schema {queue.schema} is up to date")
