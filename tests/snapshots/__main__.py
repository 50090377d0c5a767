"""Regenerate the snapshots: ``python -m tests.snapshots [statements | schema]`` (both when
neither is named). The schema of each layout is made by migrating a scratch schema on
``$PGQUEUE_TEST_DATABASE_URL``, else on the embedded server."""

from __future__ import annotations

import os
import sys
import uuid

import psycopg
from psycopg import sql

import pgqueue
from pgqueue._embedded import start_embedded
from tests.conftest import TEST_DSN_ENV
from tests.snapshots import SCHEMA_SNAPSHOTS, STATEMENTS_SNAPSHOT, render_schema, render_statements


def _schema_snapshot(dsn: str, partition: bool) -> str:
    scratch = f"snapshot_{uuid.uuid4().hex[:12]}"
    try:
        pgqueue.PgQueue(dsn, schema=scratch, migrate=False, partition=partition).migrate()
        with psycopg.connect(dsn, autocommit=True) as conn:
            return render_schema(conn, scratch)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(scratch))
            )


def _write_schemas(dsn: str) -> None:
    for partition, path in SCHEMA_SNAPSHOTS.items():
        path.write_text(_schema_snapshot(dsn, partition), "utf-8")
        print(f"wrote {path}")


def main(argv: list[str]) -> int:
    which = set(argv) or {"statements", "schema"}
    if not which <= {"statements", "schema"}:
        print(__doc__, file=sys.stderr)
        return 2
    if "statements" in which:
        STATEMENTS_SNAPSHOT.write_text(render_statements(), "utf-8")
        print(f"wrote {STATEMENTS_SNAPSHOT}")
    if "schema" in which:
        dsn = os.environ.get(TEST_DSN_ENV)
        if dsn:
            _write_schemas(dsn)
        else:
            server = start_embedded(database="pgqueue_test")
            try:
                _write_schemas(server.dsn)
            finally:
                server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
