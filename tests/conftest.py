"""Fixtures: a real PostgreSQL for every test, isolated by a schema per test.

The server is ``$PGQUEUE_TEST_DATABASE_URL`` when set (CI sets it to the system PostgreSQL),
else the embedded PostgreSQL, started once for the session. With
``$PGQUEUE_TEST_PARTITION=1`` every schema the tests create (in this process and in the
processes it starts) has the partitioned layout: the tests set pgqueue's own default,
``$PGQUEUE_PARTITION``.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from psycopg import sql

import pgqueue
from pgqueue._config import PARTITION_ENV
from pgqueue._embedded import start_embedded

TEST_DSN_ENV = "PGQUEUE_TEST_DATABASE_URL"
TEST_PARTITION_ENV = "PGQUEUE_TEST_PARTITION"
PARTITIONED = os.environ.get(TEST_PARTITION_ENV, "") == "1"
if PARTITIONED:
    os.environ[PARTITION_ENV] = "1"


def child_environ() -> dict[str, str]:
    """This process's environment without pgqueue's variables, but for the layout's
    (``$PGQUEUE_PARTITION``): for the processes a test starts, which make schemas too."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith("PGQUEUE_") or k == PARTITION_ENV
    }


@pytest.fixture(autouse=True)
def _root_logging_kept() -> Iterator[None]:
    """Give each test the root logger as it found it: the command line (main()) sets up
    logging to the standard error of its test, which pytest closes after that test."""
    root = logging.getLogger()
    level, handlers = root.level, root.handlers[:]
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


@pytest.fixture(scope="session")
def dsn() -> Iterator[str]:
    """DSN of the test database."""
    configured = os.environ.get(TEST_DSN_ENV)
    if configured:
        yield configured
        return
    server = start_embedded(database="pgqueue_test")
    try:
        yield server.dsn
    finally:
        server.stop()


@pytest.fixture
def schema(dsn: str) -> Iterator[str]:
    """A fresh schema name for this test; the schema is dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def pq(dsn: str, schema: str) -> Iterator[pgqueue.PgQueue]:
    """A started sync queue object on a fresh schema. No maintenance runs in the background:
    a test runs a pass when it wants one (``pq.maintain()``), so passes never race."""
    with pgqueue.PgQueue(dsn, schema=schema, maintenance=False) as queue:
        yield queue


@pytest.fixture
async def apq(dsn: str, schema: str) -> AsyncIterator[pgqueue.AsyncPgQueue]:
    """A started async queue object on a fresh schema (no background maintenance, as
    ``pq``)."""
    async with pgqueue.AsyncPgQueue(dsn, schema=schema, maintenance=False) as queue:
        yield queue


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A plain autocommit connection for assertions."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        yield connection
