"""Migrations: a fresh install and an upgrade from every earlier version both make the schema
in tests/snapshots/schema.sql; concurrent starters migrate once; a failed migration leaves
nothing behind; status reporting."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

import pgqueue
from pgqueue import _migrate as migrate
from pgqueue._config import resolve_partition
from pgqueue._migrate import Migration, latest_version, load_migrations, migrate_plan, status_plan
from pgqueue._sql import Statements
from pgqueue._sync.runner import run_sync
from tests.snapshots import SCHEMA_SNAPSHOT, assert_matches, render_schema


def versions(conn: psycopg.Connection[Any], schema: str) -> list[int]:
    query = sql.SQL("SELECT version FROM {}.version ORDER BY version").format(
        sql.Identifier(schema)
    )
    return [row[0] for row in conn.execute(query).fetchall()]


@pytest.fixture
def new_schema(dsn: str) -> Iterator[Callable[[], str]]:
    """Hands out fresh schema names and drops them all afterwards."""
    made: list[str] = []

    def make() -> str:
        made.append(f"m_{uuid.uuid4().hex[:12]}")
        return made[-1]

    yield make
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name in made:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


# Later migrations of the kinds real ones will be: they prove the rendering compared with
# the snapshot sees what a migration changes.
def _extra(*texts: tuple[str, str]) -> tuple[Migration, ...]:
    real = load_migrations()
    return real + tuple(
        Migration(real[-1].version + i, name, text) for i, (name, text) in enumerate(texts, 1)
    )


EXTRA = (
    (
        "add_tenant",
        """
        ALTER TABLE {schema}.job ADD COLUMN tenant text NOT NULL DEFAULT 'main';
        CREATE INDEX job_tenant_idx ON {schema}.job (tenant, id) WHERE state < 'active';
        UPDATE {schema}.job SET tenant = 'old';
    """,
    ),
    (
        "add_state_and_function",
        """
        ALTER TYPE {schema}.job_state ADD VALUE 'paused' AFTER 'retry';
        CREATE FUNCTION {schema}.waiting(q text) RETURNS bigint LANGUAGE sql STABLE
            AS $$ SELECT count(*) FROM {schema}.job WHERE name = q AND state < 'active' $$;
        ALTER TABLE {schema}.archive ALTER COLUMN data SET STATISTICS 500;
    """,
    ),
)


def test_a_fresh_install_makes_the_schema_snapshot(dsn: str, new_schema: Callable[[], str]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        fresh = new_schema()
        assert run_sync(conn, migrate_plan(Statements(fresh))) == list(
            range(1, latest_version() + 1)
        )
        assert_matches(SCHEMA_SNAPSHOT, render_schema(conn, fresh))


def test_an_upgrade_from_every_version_makes_the_schema_snapshot(
    dsn: str, new_schema: Callable[[], str]
) -> None:
    latest = latest_version()
    with psycopg.connect(dsn, autocommit=True) as conn:
        # One version at a time, all the way.
        stepwise = new_schema()
        for version in range(1, latest + 1):
            applied = run_sync(conn, migrate_plan(Statements(stepwise), target=version))
            assert applied == [version]
        assert run_sync(conn, migrate_plan(Statements(stepwise))) == []
        assert_matches(SCHEMA_SNAPSHOT, render_schema(conn, stepwise))
        # From every earlier version to the latest in one go, with jobs in the table.
        for start in range(1, latest):
            upgraded = upgrade(conn, new_schema(), start)
            assert versions(conn, upgraded) == list(range(1, latest + 1))
            assert_matches(SCHEMA_SNAPSHOT, render_schema(conn, upgraded))


def upgrade(conn: psycopg.Connection[Any], schema: str, start: int) -> str:
    """Migrate ``schema`` to version ``start``, add a job, then migrate the rest."""
    stmts = Statements(schema)
    run_sync(conn, migrate_plan(stmts, target=start))
    conn.execute(
        sql.SQL("INSERT INTO {}.job (name, keep_until) VALUES ('q', now())").format(
            sql.Identifier(schema)
        )
    )
    assert run_sync(conn, migrate_plan(stmts)) == list(
        range(start + 1, len(migrate.load_migrations()) + 1)
    )
    return schema


def test_the_rendering_shows_what_later_migrations_change(
    dsn: str, monkeypatch: pytest.MonkeyPatch, new_schema: Callable[[], str]
) -> None:
    # The rendering shows each change of the EXTRA migrations, and an upgrade from every
    # version still ends where a fresh install does.
    extended = _extra(*EXTRA)
    monkeypatch.setattr(migrate, "load_migrations", lambda: extended)
    with psycopg.connect(dsn, autocommit=True) as conn:
        fresh = new_schema()
        run_sync(conn, migrate_plan(Statements(fresh)))
        rendered = render_schema(conn, fresh)
        for start in range(1, len(extended)):
            upgraded = upgrade(conn, new_schema(), start)
            assert render_schema(conn, upgraded) == rendered, f"upgrade from version {start}"
    added = "\n".join(
        sorted(set(rendered.splitlines()) - set(SCHEMA_SNAPSHOT.read_text("utf-8").splitlines()))
    )
    # An index made on the partitioned job table is its own (ON ONLY), each partition's its
    # partition's.
    on_job = "ON ONLY pgqueue.job" if resolve_partition(None) else "ON pgqueue.job"
    for change in (
        f"(version {len(extended)})",
        "ENUM ('created', 'retry', 'paused', 'active', ",
        "    tenant text NOT NULL DEFAULT 'main'::text",
        f"CREATE INDEX job_tenant_idx {on_job} USING btree (tenant, id) "
        "WHERE (state < 'active'::pgqueue.job_state);",
        "    data jsonb STATISTICS 500,",
        "CREATE OR REPLACE FUNCTION pgqueue.waiting(q text)",
        """AS $function$ SELECT count(*) FROM "pgqueue".job WHERE name = q AND state < """,
    ):
        assert change in added, f"{change!r} not among the lines the migrations added:\n{added}"


def test_status_reports_current_latest_and_pending(
    dsn: str, monkeypatch: pytest.MonkeyPatch, new_schema: Callable[[], str]
) -> None:
    extended = _extra(*EXTRA)
    monkeypatch.setattr(migrate, "load_migrations", lambda: extended)
    stmts = Statements(new_schema())
    with psycopg.connect(dsn, autocommit=True) as conn:
        status = run_sync(conn, status_plan(stmts))
        assert (status.current, status.latest, status.up_to_date) == (None, len(extended), False)
        assert [m.version for m in status.pending] == [m.version for m in extended]
        run_sync(conn, migrate_plan(stmts, target=1))
        status = run_sync(conn, status_plan(stmts))
        assert status.current == 1
        assert [m.name for m in status.pending] == [m.name for m in extended[1:]]
        run_sync(conn, migrate_plan(stmts))
        assert run_sync(conn, status_plan(stmts)).up_to_date
        # A database migrated by a newer pgqueue is refused, not silently used.
        shipped = extended[: -len(EXTRA)]
        monkeypatch.setattr(migrate, "load_migrations", lambda: shipped)
        with pytest.raises(pgqueue.MigrationError, match="newer"):
            run_sync(conn, status_plan(stmts))
        with pytest.raises(pgqueue.MigrationError, match="newer"):
            run_sync(conn, migrate_plan(stmts))


def test_a_failed_migration_leaves_nothing_and_releases_the_lock(
    dsn: str, monkeypatch: pytest.MonkeyPatch, new_schema: Callable[[], str]
) -> None:
    broken = _extra(
        (
            "half_done",
            """
        CREATE TABLE {schema}.half (x int);
        ALTER TABLE {schema}.job ADD COLUMN doomed int;
        SELECT 1 / 0;
    """,
        )
    )
    monkeypatch.setattr(migrate, "load_migrations", lambda: broken)
    schema = new_schema()
    stmts = Statements(schema)
    shipped = len(broken) - 1
    with psycopg.connect(dsn, autocommit=True) as conn:
        with pytest.raises(pgqueue.MigrationError, match=f"{shipped + 1:04d}_half_done"):
            run_sync(conn, migrate_plan(stmts))
        assert versions(conn, schema) == list(range(1, shipped + 1))  # earlier ones kept
        assert conn.execute("SELECT to_regclass(%s)", (f"{schema}.half",)).fetchone() == (None,)
        held = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        ).fetchone()
        assert held == (0,)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    # Another session can take the lock and finds the same pending migration.
    with psycopg.connect(dsn, autocommit=True) as conn:
        status = run_sync(conn, status_plan(stmts))
        assert [m.name for m in status.pending] == ["half_done"]


def test_ten_processes_migrate_exactly_once(dsn: str, schema: str) -> None:
    script = textwrap.dedent(
        """
        import sys, pgqueue
        pq = pgqueue.PgQueue(sys.argv[1], schema=sys.argv[2], migrate=False)
        print(repr(pq.migrate()))
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, dsn, schema],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(10)
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "Traceback" not in err, err
        outputs.append(out.strip())
    # Each migration takes the lock in its own transaction, so the starters may share the
    # work: together they applied each migration once, in order.
    applied = [ast.literal_eval(out) for out in outputs]
    assert sorted(v for versions in applied for v in versions) == list(
        range(1, latest_version() + 1)
    )
    assert all(versions == sorted(versions) for versions in applied)
    with psycopg.connect(dsn) as conn:
        assert versions(conn, schema) == list(range(1, latest_version() + 1))
