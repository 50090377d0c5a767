"""The Django app: imports each installed app's job modules and migrates pgqueue's schema
after Django's ``migrate``."""

from __future__ import annotations

from typing import Any

import django
from django.apps import AppConfig
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db.models.signals import post_migrate
from django.utils.module_loading import autodiscover_modules, import_string

from ._queue import DjangoPgQueue, get_queue
from ._settings import load_settings

__all__ = ["PgQueueConfig"]


class PgQueueConfig(AppConfig):
    """``pgqueue.contrib.django``: settings checked, job modules imported, schema migrated."""

    name = "pgqueue.contrib.django"
    label = "pgqueue"
    verbose_name = "pgqueue"

    def ready(self) -> None:
        if django.VERSION < (4, 2):
            raise ImproperlyConfigured(
                "pgqueue.contrib.django needs Django 4.2 or later (the first whose "
                f"PostgreSQL backend runs on psycopg 3); this is Django {django.__version__}"
            )
        config = load_settings()  # bad settings fail at start-up, not at the first send
        if config.autodiscover:
            autodiscover_modules(*config.autodiscover)
        _register_task_handlers(get_queue())
        if config.migrate:
            post_migrate.connect(_migrate, sender=self, dispatch_uid="pgqueue-migrate")


def _migrate(sender: AppConfig, using: str, verbosity: int = 1, **kwargs: Any) -> None:
    """After ``manage.py migrate`` on pgqueue's database: migrate pgqueue's schema too."""
    queue = get_queue()
    if queue.config.database is not None and using != queue.config.database:
        return
    applied = queue.migrate()
    if applied and verbosity >= 1:
        print(f"  pgqueue: migrated schema {queue.schema} to version {applied[-1]}")


def _register_task_handlers(queue: DjangoPgQueue) -> None:
    """Register the handler of each queue of every ``TASKS`` backend that is pgqueue's, so
    that workers run ``django.tasks`` tasks (and the queues exist once the queue starts)."""
    backends = getattr(settings, "TASKS", None)
    if not isinstance(backends, dict):
        return
    for alias, params in backends.items():
        path = params.get("BACKEND") if isinstance(params, dict) else None
        if not isinstance(path, str):
            continue
        try:
            backend = import_string(path)
        except ImportError:
            continue  # django.tasks says so when the backend is first used
        # PgQueueBackend or a subclass (a duck type: this module does not import the
        # backend's, which needs django.tasks or django-tasks).
        register = getattr(backend, "register_pgqueue_handlers", None)
        if callable(register):
            register(queue, alias, params)
