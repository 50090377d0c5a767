"""The queue object of a Django project: a :class:`~pgqueue.PgQueue` that sends on Django's
connection (so a send inside ``transaction.atomic()`` commits or rolls back with it), starts
itself on first use, and reads its DSN from Django's settings when it starts."""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar, cast

import psycopg
from django.core.exceptions import ImproperlyConfigured
from django.db import close_old_connections, connections

from pgqueue import Flow, JobHandle, PgQueue
from pgqueue._db import Plan
from pgqueue._sync.function import JobDecorator
from pgqueue.errors import DatabaseError, PgQueueError

from ._settings import QueueSettings, django_dsn, load_settings

__all__ = ["DjangoPgQueue", "get_queue", "stop_queue"]

T = TypeVar("T")


class DjangoPgQueue(PgQueue):
    """A :class:`~pgqueue.PgQueue` configured by ``settings.PGQUEUE``.

    Producing calls (``send``, ``send_after``, ``insert``, ``upsert``, ``send_flow``,
    ``publish``, the throttled and debounced sends, and ``.send()`` of job functions)
    given no ``conn=`` run on Django's connection of ``PGQUEUE["DATABASE"]``: inside
    ``transaction.atomic()`` they are part of its transaction, outside it they commit at
    once. Every other call runs on the object's own pool, which it opens on first use.
    Sync handlers close the Django connections they leave unusable or past
    ``CONN_MAX_AGE``, as a request does.
    """

    def __init__(self, config: QueueSettings) -> None:
        self.config = config
        try:
            super().__init__(self.current_dsn(), schema=config.schema, **config.options)
        except PgQueueError as exc:
            raise ImproperlyConfigured(f"settings.PGQUEUE: {exc}") from exc
        self._start_lock = threading.Lock()

    def current_dsn(self) -> str:
        """The DSN of ``PGQUEUE["DSN"]``, else of Django's database as it is now."""
        if self.config.dsn is not None:
            return self.config.dsn
        assert self.config.database is not None  # load_settings() refuses neither
        return django_dsn(self.config.database)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> DjangoPgQueue:
        """Connect to the database Django's settings name now (in tests, the test
        database), migrate, open the pool."""
        with self._start_lock:
            if self._runner is None:
                self._dsn = self.current_dsn()
                super().start()
        return self

    def migrate(self) -> list[int]:
        """Apply pgqueue's pending migrations to the database Django's settings name now."""
        if self._runner is None:
            self._dsn = self.current_dsn()
        return super().migrate()

    def _run(self, plan: Plan[T], conn: psycopg.Connection[Any] | None, atomic: bool = True) -> T:
        if conn is None and self._runner is None:
            try:
                self.start()
            except BaseException:
                plan.close()
                raise
        return super()._run(plan, conn, atomic)

    # -- handlers ----------------------------------------------------------------------------

    def job(
        self,
        name: str,
        *,
        description: str | None = None,
        local_concurrency: int | None = None,
        concurrency: int | None = None,
        **defaults: Any,
    ) -> JobDecorator:
        """Register a handler, as :meth:`PgQueue.job` does; a sync one closes the Django
        connections it leaves unusable or too old, before and after each run."""
        decorator = super().job(
            name,
            description=description,
            local_concurrency=local_concurrency,
            concurrency=concurrency,
            **defaults,
        )

        def register(func: Callable[..., Any]) -> Any:
            return decorator(_closing_connections(func))

        return cast(JobDecorator, register)

    # -- producing on Django's connection ---------------------------------------------------

    def django_connection(self) -> psycopg.Connection[Any] | None:
        """Django's psycopg connection that producing calls use now (opened if closed), or
        None when ``PGQUEUE["DATABASE"]`` is None."""
        alias = self.config.database
        if alias is None:
            return None
        wrapper = connections[alias]
        if wrapper.in_atomic_block:
            # An atomic block whose transaction failed refuses queries, as Django's do.
            wrapper.validate_no_broken_transaction()
        if not wrapper.in_atomic_block and _unusable(_psycopg3(alias, wrapper.connection)):
            wrapper.close()  # gone since its last use: Django reconnects below
        # Opens it if closed; raises SynchronousOnlyOperation in async code, where Django's
        # connection must not be used (call through sync_to_async).
        wrapper.ensure_connection()
        raw = _psycopg3(alias, wrapper.connection)
        if raw is None or _unusable(raw):
            raise DatabaseError(
                f"Django's connection {alias!r} is closed or broken inside an atomic "
                "block: the transaction is lost, roll it back"
            )
        return raw

    def _producing(self, call: Callable[[psycopg.Connection[Any] | None], T]) -> T:
        conn = self.django_connection()
        if conn is None:
            return call(None)
        if self._runner is None and not self._declared():  # handlers' queues: on start
            self.start()
        try:
            return call(conn)
        except (DatabaseError, psycopg.Error):
            wrapper = connections[self.config.database or "default"]
            wrapper.errors_occurred = True  # Django checks the connection before reuse
            if wrapper.in_atomic_block:
                wrapper.needs_rollback = True  # the transaction failed: refuse to go on
            raise

    def send(
        self,
        name: str,
        data: Any = None,
        *,
        conn: psycopg.Connection[Any] | None = None,
        **options: Any,
    ) -> JobHandle | None:
        if conn is not None:
            return super().send(name, data, conn=conn, **options)
        return self._producing(
            lambda c: super(DjangoPgQueue, self).send(name, data, conn=c, **options)
        )

    def upsert(
        self,
        name: str,
        data: Any = None,
        *,
        singleton_key: str,
        conn: psycopg.Connection[Any] | None = None,
        **options: Any,
    ) -> int | None:
        if conn is not None:
            return super().upsert(name, data, singleton_key=singleton_key, conn=conn, **options)
        return self._producing(
            lambda c: super(DjangoPgQueue, self).upsert(
                name, data, singleton_key=singleton_key, conn=c, **options
            )
        )

    def insert(
        self,
        jobs: Iterable[Mapping[str, Any]],
        *,
        conn: psycopg.Connection[Any] | None = None,
    ) -> list[int | None]:
        if conn is not None:
            return super().insert(jobs, conn=conn)
        jobs = list(jobs)
        return self._producing(lambda c: super(DjangoPgQueue, self).insert(jobs, conn=c))

    def send_flow(
        self, flow: Flow, *, conn: psycopg.Connection[Any] | None = None
    ) -> list[JobHandle | None]:
        if conn is not None:
            return super().send_flow(flow, conn=conn)
        return self._producing(lambda c: super(DjangoPgQueue, self).send_flow(flow, conn=c))

    def publish(
        self,
        event: str,
        data: Any = None,
        *,
        conn: psycopg.Connection[Any] | None = None,
        **options: Any,
    ) -> list[int]:
        if conn is not None:
            return super().publish(event, data, conn=conn, **options)
        return self._producing(
            lambda c: super(DjangoPgQueue, self).publish(event, data, conn=c, **options)
        )


def _psycopg3(alias: str, raw: object) -> psycopg.Connection[Any] | None:
    """Django's raw connection (None before it connects), refused unless psycopg 3's."""
    if raw is None or isinstance(raw, psycopg.Connection):
        return raw
    raise ImproperlyConfigured(
        f"pgqueue sends on Django's connection {alias!r}, which is not psycopg 3's (Django "
        f"uses {type(raw).__module__}.{type(raw).__name__}): use Django 4.2 or later with "
        "psycopg 3, or set PGQUEUE['DATABASE'] to None to send on pgqueue's own connections "
        "(outside Django's transactions)"
    )


def _unusable(raw: psycopg.Connection[Any] | None) -> bool:
    return raw is not None and bool(raw.closed or raw.broken)


def _closing_connections(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` (a sync handler) closing the thread's unusable or old Django connections
    around each run; an async one as it is."""
    if inspect.iscoroutinefunction(func) or not callable(func):
        return func

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        close_old_connections()
        try:
            return func(*args, **kwargs)
        finally:
            close_old_connections()

    return run


_queue: DjangoPgQueue | None = None
_queue_lock = threading.Lock()


def get_queue() -> DjangoPgQueue:
    """The project's queue object, made from ``settings.PGQUEUE`` on first call (not
    started: it starts on first use, or by ``pgqueue_worker``)."""
    global _queue
    if _queue is None:
        with _queue_lock:
            if _queue is None:
                _queue = DjangoPgQueue(load_settings())
    return _queue


def stop_queue() -> None:
    """Stop the queue object, if made, closing its connections (it starts again on next
    use): before the database it is connected to goes away."""
    if _queue is not None:
        _queue.stop()
