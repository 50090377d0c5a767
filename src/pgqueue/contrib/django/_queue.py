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
from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from psycopg.conninfo import make_conninfo

from pgqueue import Flow, Job, JobHandle, PgQueue
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
    Handlers close the Django connections they leave unusable or past ``CONN_MAX_AGE``
    (an async one's, in the thread of ``sync_to_async``), as a request does.

    Example:
        ```python
        from pgqueue.contrib.django import pq  # the project's DjangoPgQueue

        with transaction.atomic():
            user = User.objects.create(email="ada@example.com")
            pq.send("welcome-email", {"user_id": user.pk})  # commits or rolls back with it
        ```
    """

    def __init__(self, config: QueueSettings) -> None:
        self.config = config
        # The name of Django's database when the project started: a test run renames it.
        self._database_name = None if config.database is None else _database_name(config.database)
        try:
            super().__init__(self.current_dsn(), schema=config.schema, **config.options)
        except PgQueueError as exc:
            raise ImproperlyConfigured(f"settings.PGQUEUE: {exc}") from exc
        self._start_lock = threading.Lock()

    def current_dsn(self) -> str:
        """The DSN of ``PGQUEUE["DSN"]``, else of Django's database as it is now. A DSN
        given with ``DATABASE`` reaches that database another way: once Django's test run
        renames the database (its test database), the DSN names that one too."""
        if self.config.dsn is not None:
            if self.config.database is None:
                return self.config.dsn
            name = _database_name(self.config.database)
            if name == self._database_name or not name:
                return self.config.dsn
            return make_conninfo(self.config.dsn, dbname=name)
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
        """Register a handler, as :meth:`PgQueue.job` does; it closes the Django connections
        it leaves unusable or too old, before and after each run."""
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

    # -- reading in Django's transaction ---------------------------------------------------

    def _in_atomic_block(self) -> bool:
        alias = self.config.database
        return alias is not None and connections[alias].in_atomic_block

    def _unseen_sends(self) -> str | None:
        if not self._in_atomic_block():
            return None
        return (
            "Django's connection is inside atomic() (a TestCase), whose jobs neither the "
            "drain nor the handlers' connections see until it commits: use "
            "TransactionTestCase, or pgqueue.testing.eager()"
        )

    def get_job_by_id(self, id: int, *, conn: psycopg.Connection[Any] | None = None) -> Job | None:
        """A job by id (see :meth:`PgQueue.get_job_by_id`); inside ``atomic()``, read on
        Django's connection, so that a job sent in the block is found."""
        if conn is not None or not self._in_atomic_block():
            return super().get_job_by_id(id, conn=conn)
        return self._producing(lambda c: super(DjangoPgQueue, self).get_job_by_id(id, conn=c))

    def find_jobs(
        self,
        queue: str | None = None,
        *,
        conn: psycopg.Connection[Any] | None = None,
        **filters: Any,
    ) -> list[Job]:
        """Jobs by filters (see :meth:`PgQueue.find_jobs`); inside ``atomic()``, read on
        Django's connection, so that the jobs sent in the block are found."""
        if conn is not None or not self._in_atomic_block():
            return super().find_jobs(queue, conn=conn, **filters)
        return self._producing(
            lambda c: super(DjangoPgQueue, self).find_jobs(queue, conn=c, **filters)
        )


def _database_name(alias: str) -> str | None:
    name = connections[alias].settings_dict.get("NAME")
    return str(name) if name else None


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
    """``func`` closing the unusable or old Django connections around each run: a sync
    handler's (its thread's), an async one's in the thread where ``sync_to_async`` runs
    the ORM (else a connection killed once fails every job after it)."""
    if not callable(func):
        return func
    if inspect.iscoroutinefunction(func):
        close = sync_to_async(_close_old_connections)

        @functools.wraps(func)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            await close()
            try:
                return await func(*args, **kwargs)
            finally:
                await close()

        return run_async

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        _close_old_connections()
        try:
            return func(*args, **kwargs)
        finally:
            _close_old_connections()

    return run


def _close_old_connections() -> None:
    """Django's ``close_old_connections``, but for connections inside an atomic block: a
    handler run in the caller's thread (eager mode, in a ``TestCase``) must not close the
    caller's transaction (Django would: its autocommit is off there)."""
    for wrapper in connections.all(initialized_only=True):
        if not wrapper.in_atomic_block:
            wrapper.close_if_unusable_or_obsolete()


_queue: DjangoPgQueue | None = None
_queue_lock = threading.Lock()


def get_queue() -> DjangoPgQueue:
    """The project's queue object, made from ``settings.PGQUEUE`` on first call (not
    started: it starts on first use, or by ``pgqueue_worker``).

    Example:
        ```python
        from pgqueue.contrib.django import get_queue

        queue = get_queue()  # the same object as pgqueue.contrib.django.pq
        job = queue.get_job_by_id(job_id)
        ```
    """
    global _queue
    if _queue is None:
        with _queue_lock:
            if _queue is None:
                _queue = DjangoPgQueue(load_settings())
    return _queue


def stop_queue() -> None:
    """Stop the queue object, if made, closing its connections (it starts again on next
    use): before the database it is connected to goes away.

    Example:
        ```python
        class OrderTests(TestCase):
            def setUp(self) -> None:
                stop_queue()  # eager() refuses a started queue object

            def test_placing_an_order(self) -> None:
                with eager(pq) as jobs:
                    place_order(5)  # the project's code: it sends the jobs
                self.assertEqual(jobs.outputs("charge"), [{"charged": 30}])
        ```
    """
    if _queue is not None:
        _queue.stop()
