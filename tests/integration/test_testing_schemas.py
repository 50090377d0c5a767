"""pgqueue.testing.create_schema: a test's fresh schema, made in one transaction, is the
schema migrating makes, in either layout."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

import pgqueue
from pgqueue._migrate import latest_version
from pgqueue.errors import MigrationError
from pgqueue.testing import create_schema, drop_schema
from tests.snapshots import SCHEMA_SNAPSHOTS, assert_matches, render_schema


@pytest.mark.parametrize("partition", [False, True])
def test_a_created_schema_is_the_migrated_one(
    dsn: str, schema: str, conn: psycopg.Connection[Any], partition: bool
) -> None:
    create_schema(dsn, schema, partition=partition)
    assert_matches(SCHEMA_SNAPSHOTS[partition], render_schema(conn, schema))
    with pgqueue.PgQueue(dsn, schema=schema, maintenance=False, partition=partition) as pq:
        status = pq.migration_status()
        assert status.current == latest_version() and not status.pending


def test_an_existing_schema_is_refused_and_left_as_it_was(
    dsn: str, schema: str, conn: psycopg.Connection[Any]
) -> None:
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    conn.execute(sql.SQL("CREATE TABLE {}.mine (x int)").format(sql.Identifier(schema)))
    with pytest.raises(MigrationError, match="already exists"):
        create_schema(dsn, schema)
    tables = conn.execute(
        "SELECT relname FROM pg_class WHERE relnamespace = %s::regnamespace", (schema,)
    ).fetchall()
    assert tables == [("mine",)]
    drop_schema(dsn, schema)
    drop_schema(dsn, schema)  # gone already: nothing to do
    assert conn.execute("SELECT to_regnamespace(%s)", (schema,)).fetchone() == (None,)
