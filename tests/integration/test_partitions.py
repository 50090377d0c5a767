"""The partitioned layout: each queue's jobs in a partition of their own, made and dropped
with the queue, a DEFAULT partition for any other, claims that read one partition."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgqueue import JobState, PgQueue
from pgqueue._config import PARTITION_ENV
from pgqueue._sql import Statements
from pgqueue.cli import main
from pgqueue.errors import InvalidOptionError, MigrationError


@pytest.fixture
def ppq(dsn: str, schema: str) -> Iterator[PgQueue]:
    """A started queue object on a fresh schema with the partitioned layout."""
    with PgQueue(dsn, schema=schema, maintenance=False, partition=True) as queue:
        yield queue


def _partitions(conn: psycopg.Connection[Any], schema: str) -> dict[str, str]:
    """Each partition of the job table and its bound."""
    rows = conn.execute(
        """SELECT c.relname, pg_get_expr(c.relpartbound, c.oid)
           FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
           WHERE i.inhparent = to_regclass(%s)""",
        [f"{schema}.job"],
    ).fetchall()
    return {name: bound for name, bound in rows}


def _partition_of(conn: psycopg.Connection[Any], schema: str, job_id: int) -> str:
    row = conn.execute(
        sql.SQL("SELECT tableoid::regclass::text FROM {}.job WHERE id = %s").format(
            sql.Identifier(schema)
        ),
        [job_id],
    ).fetchone()
    assert row is not None
    return str(row[0]).rsplit(".", 1)[-1]


def _partition_name(conn: psycopg.Connection[Any], schema: str, queue: str) -> str:
    row = conn.execute(
        sql.SQL("SELECT {}.job_partition_name(%s)").format(sql.Identifier(schema)), [queue]
    ).fetchone()
    assert row is not None
    return str(row[0])


def test_each_queue_gets_a_partition_that_holds_its_jobs_and_goes_with_it(
    ppq: PgQueue, conn: psycopg.Connection[Any]
) -> None:
    assert _partitions(conn, ppq.schema) == {"job_default": "DEFAULT"}
    ppq.create_queue("emails")
    ppq.create_queue("reports")
    ppq.create_queue("emails")  # again: nothing new
    emails = _partition_name(conn, ppq.schema, "emails")
    reports = _partition_name(conn, ppq.schema, "reports")
    assert _partitions(conn, ppq.schema) == {
        "job_default": "DEFAULT",
        emails: "FOR VALUES IN ('emails')",
        reports: "FOR VALUES IN ('reports')",
    }
    first = ppq.send("emails", {"to": "a"})
    second = ppq.send("reports", {})
    assert first is not None and second is not None and first != second
    assert _partition_of(conn, ppq.schema, first) == emails
    assert _partition_of(conn, ppq.schema, second) == reports
    # Addressed by id alone, jobs are found in any partition.
    found = ppq.get_job_by_id(first)
    assert found is not None and found.name == "emails" and found.data == {"to": "a"}
    (claimed,) = ppq.fetch("emails")
    assert claimed.id == first
    assert ppq.complete(claimed.id, {"sent": True}) is not None
    done = ppq.get_job_by_id(first)
    assert done is not None and done.state.value == "completed"

    assert ppq.delete_queue("emails") is True
    assert _partitions(conn, ppq.schema) == {
        "job_default": "DEFAULT",
        reports: "FOR VALUES IN ('reports')",
    }
    assert ppq.get_job_by_id(first) is None
    assert ppq.get_job_by_id(second) is not None


def test_the_default_partition_takes_jobs_of_a_queue_without_one_until_it_gets_one(
    ppq: PgQueue, conn: psycopg.Connection[Any]
) -> None:
    ident = sql.Identifier(ppq.schema)
    ppq.create_queue("orphan")
    part = _partition_name(conn, ppq.schema, "orphan")
    conn.execute(sql.SQL("DROP TABLE {}.{}").format(ident, sql.Identifier(part)))
    job_id = ppq.send("orphan", {"n": 1})
    assert job_id is not None
    assert _partition_of(conn, ppq.schema, job_id) == "job_default"
    (row,) = conn.execute(
        sql.SQL("SELECT {}.job_partition_create('orphan')").format(ident)
    ).fetchall()
    assert row[0] is True
    assert _partition_of(conn, ppq.schema, job_id) == part
    moved = ppq.get_job_by_id(job_id)
    assert moved is not None and moved.state.value == "created" and moved.data == {"n": 1}
    (claimed,) = ppq.fetch("orphan")
    assert claimed.id == job_id
    # Ids keep coming from the one sequence, unique across partitions.
    assert (ppq.send("orphan", {}) or 0) > job_id


def test_deleting_a_queue_leaves_a_partition_bound_to_another_queue(
    ppq: PgQueue, conn: psycopg.Connection[Any]
) -> None:
    """Two names whose md5 share their first 16 digits would share a partition name: the
    first queue's partition is its own, and deleting the second never drops it."""
    ident = sql.Identifier(ppq.schema)
    # A collision, made by hand (a real one takes about 2**32 names).
    conn.execute(
        sql.SQL(
            "CREATE OR REPLACE FUNCTION {}.job_partition_name(queue_name text) RETURNS text "
            "LANGUAGE sql IMMUTABLE AS $$ SELECT 'job_' || CASE WHEN queue_name IN "
            "('first', 'second') THEN 'same' ELSE left(md5(queue_name), 16) END $$"
        ).format(ident)
    )
    ppq.create_queue("first")
    ppq.insert([{"name": "first", "data": n} for n in range(3)])
    ppq.create_queue("second")
    second = ppq.send("second", {})
    assert second is not None
    assert _partition_of(conn, ppq.schema, second) == "job_default"
    assert ppq.delete_queue("second")
    assert _partitions(conn, ppq.schema)["job_same"] == "FOR VALUES IN ('first')"
    assert ppq.get_queue_stats("first")[0].counts[JobState.created] == 3


def _scanned(node: dict[str, Any]) -> set[str]:
    """The relations a plan's scans read (those its execution reached)."""
    found = set()
    if "Relation Name" in node and node["Node Type"] != "ModifyTable" and node["Actual Loops"]:
        found.add(node["Relation Name"])
    for child in node.get("Plans", []):
        found |= _scanned(child)
    return found


@pytest.mark.parametrize("mode", ["force_custom_plan", "force_generic_plan"])
def test_a_claim_reads_one_partition(
    ppq: PgQueue, conn: psycopg.Connection[Any], mode: str
) -> None:
    for i in range(10):
        ppq.create_queue(f"q{i}")
        ppq.insert([{"name": f"q{i}", "data": {"i": i}} for _ in range(20)])
    part = _partition_name(conn, ppq.schema, "q3")
    query = Statements(ppq.schema).job_fetch
    params = {"name": "q3", "limit": 5, "worker_id": "w", "heartbeat": 30.0, "turn": False}
    # As psycopg prepares it after a few executions: $n parameters, in order of appearance.
    names = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", query)))
    numbered = re.sub(r"%\((\w+)\)s", lambda m: f"${names.index(m[1]) + 1}", query)
    with conn.transaction(force_rollback=True):
        conn.execute("PREPARE claim AS " + numbered.replace("%%", "%"))
        conn.execute(sql.SQL("SET LOCAL plan_cache_mode = {}").format(sql.Identifier(mode)))
        explain = sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE claim ({})").format(
            sql.SQL(", ").join(sql.Literal(params[n]) for n in names)
        )
        row = conn.execute(explain).fetchone()
        conn.execute("DEALLOCATE claim")
    assert row is not None
    plan = row[0] if isinstance(row[0], list) else json.loads(row[0])
    assert {r for r in _scanned(plan[0]["Plan"]) if r.startswith("job")} == {part}
    assert len(ppq.fetch("q3", 5)) == 5


def test_the_partitioned_layout_is_refused_for_a_schema_that_exists_without_it(
    dsn: str, schema: str, conn: psycopg.Connection[Any]
) -> None:
    with PgQueue(dsn, schema=schema, maintenance=False, partition=False) as plain:
        plain.create_queue("q")
    with pytest.raises(MigrationError, match="partitioned layout is chosen when a schema"):
        PgQueue(dsn, schema=schema, maintenance=False, partition=True).migrate()
    (row,) = conn.execute(
        "SELECT relkind::text FROM pg_class WHERE oid = to_regclass(%s)", [f"{schema}.job"]
    ).fetchall()
    assert row[0] == "r"
    # A partitioned schema is used as it is by an object that does not ask for the layout.
    other = f"{schema}_p"
    try:
        PgQueue(dsn, schema=other, maintenance=False, partition=True).migrate()
        with PgQueue(dsn, schema=other, maintenance=False, partition=False) as pq:
            pq.create_queue("q")
            assert pq.send("q", {}) is not None
    finally:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(other)))


def test_a_bad_partition_option_is_refused(dsn: str, schema: str) -> None:
    with pytest.raises(InvalidOptionError, match="partition must be"):
        PgQueue(dsn, schema=schema, partition="yes")  # type: ignore[arg-type]


def test_migrate_partition_on_the_command_line(
    dsn: str, schema: str, conn: psycopg.Connection[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate", "--dsn", dsn, "--schema", schema, "--partition"]) == 0
    assert _partitions(conn, schema) == {"job_default": "DEFAULT"}
    assert main(["migrate", "--dsn", dsn, "--schema", schema, "--partition"]) == 0  # no-op
    other = f"{schema}_plain"
    try:
        with PgQueue(dsn, schema=other, maintenance=False, partition=False):
            pass
        assert main(["migrate", "--dsn", dsn, "--schema", other, "--partition"]) == 1
        assert "partitioned layout is chosen when a schema" in capsys.readouterr().err
    finally:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(other)))


def test_the_variable_leaves_an_existing_schema_in_its_layout(
    dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$PGQUEUE_PARTITION chooses the layout of the schemas it creates: one that exists
    without it still starts (only partition=True asks for the layout outright)."""
    monkeypatch.setenv(PARTITION_ENV, "0")
    with PgQueue(dsn, schema=schema, maintenance=False):
        pass
    monkeypatch.setenv(PARTITION_ENV, "1")
    with PgQueue(dsn, schema=schema, maintenance=False) as pq:
        pq.create_queue("q")
        assert pq.send("q", {}) is not None
    monkeypatch.setenv(PARTITION_ENV, "maybe")
    with pytest.raises(InvalidOptionError, match="PGQUEUE_PARTITION"):
        PgQueue(dsn, schema=schema)
