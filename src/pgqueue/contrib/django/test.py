"""Django's test runner, stopping pgqueue's queue object before the test databases are
destroyed (its pool is connected to them): ``TEST_RUNNER =
"pgqueue.contrib.django.test.PgQueueDiscoverRunner"``."""

from __future__ import annotations

from typing import Any

from django.test.runner import DiscoverRunner

from ._queue import stop_queue

__all__ = ["PgQueueDiscoverRunner"]


class PgQueueDiscoverRunner(DiscoverRunner):
    """Django's DiscoverRunner; the queue object stops (closing its connections) before the
    test databases are destroyed."""

    def teardown_databases(self, old_config: Any, **kwargs: Any) -> None:
        stop_queue()
        super().teardown_databases(old_config, **kwargs)
