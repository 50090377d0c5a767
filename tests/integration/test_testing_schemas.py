"""pgqueue.testing.create_schema: a test's fresh schema, copied from a migrated template's
SQL (or made by the migrations in one transaction), is the schema migrating makes, in
either layout."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

import pgqueue
from pgqueue._migrate import latest_version
from pgqueue.errors import InvalidInputError, MigrationError
from pgqueue.testing import _schemas, create_schema, drop_schema
from tests.snapshots import SCHEMA_SNAPSHOTS, assert_matches, render_schema


def _is_the_migrated_schema(
    dsn: str, schema: str, conn: psycopg.Connection[Any], partition: bool, render: bool = True
) -> None:
    if render:  # (the rendering is of a name SQL writes unquoted)
        assert_matches(SCHEMA_SNAPSHOTS[partition], render_schema(conn, schema))
    with pgqueue.PgQueue(dsn, schema=schema, maintenance=False, partition=partition) as pq:
        status = pq.migration_status()
        assert status.current == latest_version() and not status.pending
        pq.create_queue("q")
        assert pq.send("q", {"works": True}) == 1  # the sequence starts afresh
        (job,) = pq.fetch("q")
        assert job.data == {"works": True}


@pytest.mark.parametrize("partition", [False, True])
def test_a_created_schema_is_the_migrated_one(
    dsn: str, schema: str, conn: psycopg.Connection[Any], partition: bool
) -> None:
    create_schema(dsn, schema, partition=partition)
    assert _schemas._dumps.get((dsn, partition)) is not None  # copied (pg_dump is here)
    _is_the_migrated_schema(dsn, schema, conn, partition)


@pytest.mark.parametrize("partition", [False, True])
def test_without_pg_dump_the_migrations_make_it_in_one_transaction(
    dsn: str,
    schema: str,
    conn: psycopg.Connection[Any],
    partition: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_schemas, "_dumps", {})
    monkeypatch.setattr(_schemas, "_pg_dumps", lambda: ["/nonexistent/pg_dump"])
    create_schema(dsn, schema, partition=partition)
    assert _schemas._dumps[(dsn, partition)] is None
    _is_the_migrated_schema(dsn, schema, conn, partition)


def test_a_name_sql_must_quote_is_made_by_the_migrations(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    name = "variadic"  # a keyword: SQL quotes it
    try:
        create_schema(dsn, name, partition=False)
        _is_the_migrated_schema(dsn, name, conn, False, render=False)
    finally:
        drop_schema(dsn, name)


def test_an_existing_schema_is_refused_and_left_as_it_was(
    dsn: str, schema: str, conn: psycopg.Connection[Any]
) -> None:
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    conn.execute(sql.SQL("CREATE TABLE {}.mine (x int)").format(sql.Identifier(schema)))
    for _ in range(2):  # copied, then (the copy refused) by the migrations
        with pytest.raises(MigrationError, match="already exists"):
            create_schema(dsn, schema)
    tables = conn.execute(
        "SELECT relname FROM pg_class WHERE relnamespace = %s::regnamespace", (schema,)
    ).fetchall()
    assert tables == [("mine",)]


def test_no_template_is_left_behind(dsn: str, conn: psycopg.Connection[Any]) -> None:
    left = conn.execute(
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'pgqueue_template_%'"
    ).fetchall()
    assert left == []


def test_a_dump_this_server_refuses_is_given_up_for_the_migrations(
    dsn: str, schema: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_schemas, "_dumps", {(dsn, False): ("tpl", "CREATE NONSENSE tpl")})
    create_schema(dsn, schema, partition=False)
    assert _schemas._dumps[(dsn, False)] is None
    _is_the_migrated_schema(dsn, schema, conn, False)


def test_drop_schema_drops_only_a_pgqueue_schema(
    dsn: str, schema: str, conn: psycopg.Connection[Any]
) -> None:
    drop_schema(dsn, schema)  # none yet: nothing to do
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    conn.execute(sql.SQL("CREATE TABLE {}.accounts (id int)").format(sql.Identifier(schema)))
    with pytest.raises(InvalidInputError, match="not a pgqueue schema"):
        drop_schema(dsn, schema)
    with pytest.raises(InvalidInputError, match="not a pgqueue schema"):
        drop_schema(dsn, "public")
    kept = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [f"{schema}.accounts"]).fetchone()
    assert kept == (True,)
    conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    create_schema(dsn, schema)
    drop_schema(dsn, schema)
    assert conn.execute("SELECT to_regnamespace(%s)", [schema]).fetchone() == (None,)
