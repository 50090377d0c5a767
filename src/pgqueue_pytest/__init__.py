"""pgqueue's pytest plugin: fixtures that give each test a fresh schema, and the
application's queue object started on it. Installed with pgqueue (entry point ``pgqueue``
of ``pytest11``) and inert: it adds command-line and ini options and fixtures named
``pgqueue_*``, none of them autouse, so nothing happens (no server, no connection) unless
a test asks for one. A module of its own, outside the pgqueue package, so that loading it
imports nothing of pgqueue until a fixture is used. See docs/testing.md.

- ``pgqueue_dsn`` (session): the server: ``--pgqueue-dsn``, else
  ``$PGQUEUE_TEST_DATABASE_URL``, else the embedded PostgreSQL, started once.
- ``pgqueue_schema``: a new schema's name for this test, dropped afterwards.
- ``pgqueue_app``: the application's queue object: the ``pgqueue_app = module:attribute``
  ini option (or ``--pgqueue-app``), or None; override the fixture to return it.
- ``pgqueue_queue``: the app's PgQueue (or a new one, without an app) pointed at this
  test's schema and started; ``pgqueue_aqueue``: the same for an AsyncPgQueue (needs
  pytest-asyncio).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pgqueue import AsyncPgQueue, PgQueue

DSN_ENV = "PGQUEUE_TEST_DATABASE_URL"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pgqueue", "pgqueue test fixtures")
    group.addoption(
        "--pgqueue-dsn",
        default=None,
        help=f"PostgreSQL for the pgqueue_* fixtures (default ${DSN_ENV}, else embedded)",
    )
    group.addoption(
        "--pgqueue-app",
        default=None,
        help="the application's queue object (module:attribute) for pgqueue_queue",
    )
    parser.addini("pgqueue_app", "the application's queue object (module:attribute)")


@pytest.fixture(scope="session")
def pgqueue_dsn(request: pytest.FixtureRequest) -> Iterator[str]:
    """The PostgreSQL server of the pgqueue fixtures (a DSN)."""
    configured = request.config.getoption("--pgqueue-dsn") or os.environ.get(DSN_ENV)
    if configured:
        yield configured
        return
    from pgqueue._embedded import start_embedded

    server = start_embedded(database="pgqueue_test")
    try:
        yield server.dsn
    finally:
        server.stop()


@pytest.fixture
def pgqueue_schema(pgqueue_dsn: str) -> Iterator[str]:
    """A fresh schema's name for this test (created by ``pgqueue_queue`` and
    ``pgqueue_aqueue``, or by the queue object a test starts on it); dropped afterwards."""
    from pgqueue.testing import drop_schema

    name = f"pgqueue_test_{uuid.uuid4().hex[:12]}"
    yield name
    drop_schema(pgqueue_dsn, name)


@pytest.fixture
def pgqueue_app(request: pytest.FixtureRequest) -> AsyncPgQueue | PgQueue | None:
    """The application's queue object, from ``--pgqueue-app`` or the ``pgqueue_app`` ini
    option (``module:attribute``); None without one. Override it to return yours."""
    spec = request.config.getoption("--pgqueue-app") or request.config.getini("pgqueue_app")
    if not spec:
        return None
    from pgqueue.cli import load_app

    return load_app(str(spec))


@pytest.fixture
def pgqueue_queue(
    pgqueue_app: AsyncPgQueue | PgQueue | None, pgqueue_dsn: str, pgqueue_schema: str
) -> Iterator[PgQueue]:
    """The application's PgQueue (``pgqueue_app``), or a new one if there is none, pointed
    at this test's schema and started (no background maintenance: ``drain`` runs it)."""
    from pgqueue import AsyncPgQueue, PgQueue
    from pgqueue.testing import bind, create_schema

    if isinstance(pgqueue_app, AsyncPgQueue):
        raise pytest.UsageError("pgqueue_app is an AsyncPgQueue: use the pgqueue_aqueue fixture")
    queue = pgqueue_app or PgQueue(pgqueue_dsn, schema=pgqueue_schema, maintenance=False)
    create_schema(pgqueue_dsn, pgqueue_schema, partition=queue._partition)
    with bind(queue, pgqueue_dsn, pgqueue_schema):
        queue.start()
        try:
            yield queue
        finally:
            queue.stop()


async def _aqueue(app: Any, dsn: str, schema: str) -> AsyncIterator[AsyncPgQueue]:
    from pgqueue import AsyncPgQueue, PgQueue
    from pgqueue.testing import bind, create_schema

    if isinstance(app, PgQueue):
        raise pytest.UsageError("pgqueue_app is a PgQueue: use the pgqueue_queue fixture")
    queue = app or AsyncPgQueue(dsn, schema=schema, maintenance=False)
    create_schema(dsn, schema, partition=queue._partition)
    with bind(queue, dsn, schema):
        await queue.start()
        try:
            yield queue
        finally:
            await queue.stop()


async def _aqueue_fixture(
    pgqueue_app: AsyncPgQueue | PgQueue | None, pgqueue_dsn: str, pgqueue_schema: str
) -> AsyncIterator[AsyncPgQueue]:
    """The application's AsyncPgQueue (``pgqueue_app``), or a new one if there is none,
    pointed at this test's schema and started (no background maintenance)."""
    async for queue in _aqueue(pgqueue_app, pgqueue_dsn, pgqueue_schema):
        yield queue


def _no_aqueue() -> None:
    """The application's AsyncPgQueue on this test's schema (needs pytest-asyncio)."""
    raise pytest.UsageError(
        "pgqueue_aqueue needs pytest-asyncio; elsewhere start the queue in your own async "
        "fixture with pgqueue.testing.bind(queue, pgqueue_dsn, pgqueue_schema)"
    )


def _asyncio_fixture() -> Any:
    try:
        import pytest_asyncio
    except ImportError:  # pragma: no cover - pytest-asyncio is in the dev extra
        return pytest.fixture(name="pgqueue_aqueue")(_no_aqueue)
    return pytest_asyncio.fixture(name="pgqueue_aqueue")(_aqueue_fixture)


pgqueue_aqueue = _asyncio_fixture()
