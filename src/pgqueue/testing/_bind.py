"""Pointing an application's queue object at a test's database and schema, and back."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TypeVar

from .._async.queue import AsyncPgQueue
from .._config import check_dsn, check_schema
from .._sql import Statements
from .._sync.queue import PgQueue
from ..errors import InvalidInputError, InvalidOptionError

__all__ = ["bind"]

Q = TypeVar("Q", PgQueue, AsyncPgQueue)
# What bind() changes on the object, restored when it ends.
_KEPT = ("schema", "sql", "_dsn", "_run_maintenance")


@contextlib.contextmanager
def bind(queue: Q, dsn: str, schema: str) -> Iterator[Q]:
    """Point ``queue`` (an application's queue object, not started) at ``dsn`` and
    ``schema`` inside the ``with`` block, with no background maintenance (a test runs it
    when it wants: :func:`drain` does): its handlers, schedules and job functions stay
    as they are, so the application's own sends reach the test's schema once the object
    is started there. Stop it before the block ends; then it points where it did.

    Example:
        ```python
        from shop.app import pq  # the application's queue object, not started

        def test_an_order_is_charged(pgqueue_dsn, pgqueue_schema):
            create_schema(pgqueue_dsn, pgqueue_schema)
            with bind(pq, pgqueue_dsn, pgqueue_schema), pq:  # started, then stopped
                pq.send("charge", {"order": 1, "total": 30})
                assert drain(pq).names == ["charge", "receipt"]
        ```
    """
    if not isinstance(queue, AsyncPgQueue | PgQueue):
        raise InvalidInputError(
            f"bind() takes a PgQueue or an AsyncPgQueue, got {type(queue).__name__}"
        )
    check_dsn(dsn)
    check_schema(schema)
    if queue._runner is not None:
        raise InvalidInputError(
            "the queue object is started: bind it to the test's schema before starting it"
        )
    if queue._pool is not None:
        raise InvalidOptionError(
            "the queue object uses the caller's pool (pool=), which bind() cannot point "
            "elsewhere: make the test's queue object with the test's dsn instead"
        )
    core, cron, registry = queue._core, queue._cron, queue.registry
    kept = {name: getattr(queue, name) for name in _KEPT}
    queue.schema = schema
    queue.sql = core.sql = Statements(schema)
    queue._dsn = dsn
    queue._run_maintenance = False
    registry.redeclare()
    cron.rewrite()
    try:
        yield queue
    finally:
        started = queue._runner is not None
        for name, value in kept.items():
            setattr(queue, name, value)
        core.sql = queue.sql
        registry.redeclare()
        cron.rewrite()
        if started and sys.exc_info()[0] is None:
            raise InvalidInputError("stop the queue object before its bind() block ends")
