"""Deferred jobs cost a claim nothing: 100,000 jobs at the head of a queue whose start_after
is in the future (sent for later, or retries backing off) are passed over on the fetch
index's entries, never read from the table, whether the claim is of a plain queue or of one
that runs one job per key."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgqueue import PgQueue
from pgqueue._sql import Statements
from tests.plans import as_one_table

DEFERRED = 100_000
DUE = 200


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)


def _load(pq: PgQueue, conn: psycopg.Connection[Any], name: str, **options: Any) -> list[int]:
    """DEFERRED jobs due in an hour (half of them retries), then DUE jobs due now; returns
    the ids of the due ones."""
    pq.create_queue(name, **options)
    ident = sql.Identifier(pq.schema)
    conn.execute(
        sql.SQL(
            """
            INSERT INTO {0}.job (name, state, keep_until, start_after, policy, singleton_key)
            SELECT %(name)s, (ARRAY['created', 'retry'])[i %% 2 + 1]::{0}.job_state,
                now() + interval '1 day', now() + interval '1 hour', %(policy)s, 'k' || i
            FROM generate_series(1, %(n)s) AS i
            """
        ).format(ident),
        {"name": name, "n": DEFERRED, "policy": options.get("policy", "standard")},
    )
    due = conn.execute(
        sql.SQL(
            """
            INSERT INTO {0}.job (name, keep_until, start_after, policy, singleton_key)
            SELECT %(name)s, now() + interval '1 day', now() - interval '1 minute',
                %(policy)s, 'd' || i
            FROM generate_series(1, %(n)s) AS i
            RETURNING id
            """
        ).format(ident),
        {"name": name, "n": DUE, "policy": options.get("policy", "standard")},
    ).fetchall()
    conn.execute(sql.SQL("VACUUM ANALYZE {}.job").format(ident))
    return sorted(r[0] for r in due)


def _explain(conn: psycopg.Connection[Any], query: Any, params: dict[str, Any]) -> Any:
    """The executed plan of ``query`` (its claims rolled back)."""
    explain = sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ") + sql.SQL(query)
    with conn.transaction(force_rollback=True):
        row = conn.execute(explain, params).fetchone()
    assert row is not None
    plan = row[0] if isinstance(row[0], list) else json.loads(row[0])
    return as_one_table(conn, query, plan[0]["Plan"])


def _job_scans(plan: Any) -> list[dict[str, Any]]:
    return [n for n in _nodes(plan) if n.get("Index Name") == "job_fetch_idx"]


@pytest.mark.slow
def test_a_claim_passes_deferred_jobs_on_index_entries(
    pq: PgQueue, conn: psycopg.Connection[Any]
) -> None:
    due = _load(pq, conn, "deferred")
    query = Statements(pq.schema).job_fetch
    params = {"name": "deferred", "limit": 10, "worker_id": "w", "heartbeat": 30.0}
    plan = _explain(conn, query, {**params, "turn": False})
    (scan,) = _job_scans(plan)
    # start_after is checked on the index entry (an index condition), so no deferred row
    # is read and none is removed by a filter; the scan reads a few pages, not the
    # thousands the deferred rows fill.
    assert "start_after" in scan["Index Cond"], scan
    assert scan.get("Rows Removed by Filter", 0) == 0, scan
    assert scan["Actual Rows"] == 10, scan
    assert scan["Shared Hit Blocks"] + scan["Shared Read Blocks"] < 50, scan
    # The due jobs are claimed, in order, none of the deferred ones.
    fetched = pq.fetch("deferred", 10) + pq.fetch("deferred", 10)
    assert [j.id for j in fetched] == due[:20]


@pytest.mark.slow
def test_a_claim_of_more_than_the_due_jobs_reads_no_deferred_row(
    pq: PgQueue, conn: psycopg.Connection[Any]
) -> None:
    # Fewer due jobs than the claim asks for: the scan goes on through the deferred jobs'
    # index entries (at most a few hundred index pages here), still reading no row of theirs.
    _load(pq, conn, "deferred")
    query = Statements(pq.schema).job_fetch
    params = {"name": "deferred", "limit": DUE + 100, "worker_id": "w", "heartbeat": 30.0}
    (scan,) = _job_scans(_explain(conn, query, {**params, "turn": False}))
    assert scan.get("Rows Removed by Filter", 0) == 0, scan
    assert scan["Actual Rows"] == DUE, scan
    (table,) = conn.execute(  # the job table's pages (its partitions' in that layout)
        "SELECT sum(pg_relation_size(c)) / 8192 FROM (SELECT %(job)s::regclass AS c UNION ALL "
        "SELECT inhrelid FROM pg_inherits WHERE inhparent = %(job)s::regclass) AS r",
        {"job": f'"{pq.schema}".job'},
    ).fetchone() or (0,)
    # The index scan's pages are fewer than half of the table's: it did not read the rows.
    assert scan["Shared Hit Blocks"] + scan["Shared Read Blocks"] < table / 2, (scan, table)


@pytest.mark.slow
def test_a_one_per_key_claim_passes_deferred_jobs_on_index_entries(
    pq: PgQueue, conn: psycopg.Connection[Any]
) -> None:
    due = _load(pq, conn, "keyed", policy="singleton")
    query = Statements(pq.schema).job_fetch_one_per_key
    params = {"name": "keyed", "limit": 10, "window": 40, "worker_id": "w", "heartbeat": 30.0}
    plan = _explain(conn, query, params)
    (scan,) = _job_scans(plan)
    assert scan.get("Rows Removed by Filter", 0) == 0, scan
    assert scan["Shared Hit Blocks"] + scan["Shared Read Blocks"] < 50, scan
    fetched = pq.fetch("keyed", 10)
    assert [j.id for j in fetched] == due[:10]
