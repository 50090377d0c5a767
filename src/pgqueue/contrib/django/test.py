"""Django's test runner, stopping pgqueue's queue object before Django clones or destroys
the test databases (its pool is connected to them): ``TEST_RUNNER =
"pgqueue.contrib.django.test.PgQueueDiscoverRunner"``."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_migrate
from django.test.runner import DiscoverRunner

from ._queue import stop_queue

__all__ = ["PgQueueDiscoverRunner"]

_STOP_AFTER_MIGRATE = "pgqueue-test-stop-after-migrate"


class PgQueueDiscoverRunner(DiscoverRunner):
    """Django's DiscoverRunner; the queue object stops (closing its connections) once the
    test databases are migrated, and before they are destroyed.

    Example:
        ```python
        # settings.py
        TEST_RUNNER = "pgqueue.contrib.django.test.PgQueueDiscoverRunner"
        ```
    """

    def setup_databases(self, **kwargs: Any) -> Any:
        # A data migration that sent a job started the queue object on the new test
        # database, which Django then could not clone for parallel processes (a database
        # in use is no template); it starts again on its next use.
        post_migrate.connect(_stop_after_migrate, dispatch_uid=_STOP_AFTER_MIGRATE)
        try:
            return super().setup_databases(**kwargs)
        finally:
            post_migrate.disconnect(dispatch_uid=_STOP_AFTER_MIGRATE)

    def teardown_databases(self, old_config: Any, **kwargs: Any) -> None:
        stop_queue()
        super().teardown_databases(old_config, **kwargs)


def _stop_after_migrate(**kwargs: Any) -> None:
    stop_queue()
