"""The hot path's plan: fetching from one queue is an index scan with no sort, at a million
jobs in every state, and claims in priority-then-creation order."""

from __future__ import annotations

import json
import re
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgqueue import PgQueue
from pgqueue._sql import Statements
from tests.conftest import PARTITIONED
from tests.plans import as_one_table

JOBS = 1_000_000
QUEUES = 9


def _nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    found = [node]
    for child in node.get("Plans", []):
        found += _nodes(child)
    return found


def _plan(
    conn: psycopg.Connection[Any],
    explain: str,
    params: dict[str, Any] | None,
    query: str | None = None,
) -> list[dict[str, Any]]:
    """The nodes of a plan, read as of one job table (``query``: the statement, when
    ``explain`` does not show it)."""
    row = conn.execute(explain, params).fetchone()
    assert row is not None
    plan = row[0] if isinstance(row[0], list) else json.loads(row[0])
    return _nodes(as_one_table(conn, query or explain, plan[0]["Plan"]))


def _prepared_plan(
    conn: psycopg.Connection[Any], query: str, params: dict[str, Any], mode: str
) -> list[dict[str, Any]]:
    """The plan of ``query`` prepared (as psycopg prepares it after a few executions) and
    executed with ``params`` under plan_cache_mode ``mode``."""
    names = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", query)))
    numbered = re.sub(r"%\((\w+)\)s", lambda m: f"${names.index(m[1]) + 1}", query)
    conn.execute("PREPARE pgqueue_plan AS " + numbered.replace("%%", "%"))
    conn.execute(sql.SQL("SET plan_cache_mode = {}").format(sql.Identifier(mode)))
    try:
        return _plan(
            conn,
            sql.SQL("EXPLAIN (FORMAT JSON) EXECUTE pgqueue_plan ({})")
            .format(sql.SQL(", ").join(sql.Literal(params[n]) for n in names))
            .as_string(conn),
            None,
            query,
        )
    finally:
        conn.execute("RESET plan_cache_mode")
        conn.execute("DEALLOCATE pgqueue_plan")


def _load_a_million(pq: PgQueue, conn: psycopg.Connection[Any]) -> None:
    """Mixed states over several queues, loaded in one statement; most rows are finished,
    as in a busy production table whose archiving is behind."""
    ident = sql.Identifier(pq.schema)
    for i in range(QUEUES):
        pq.create_queue(f"q{i}")
    conn.execute(
        sql.SQL(
            """
            INSERT INTO {0}.job (name, priority, state, keep_until, completed_at, start_after,
                data)
            SELECT 'q' || (i %% %(queues)s), i %% 7,
                (ARRAY['created', 'completed', 'failed', 'completed', 'retry', 'cancelled',
                       'completed', 'active'])[i %% 8 + 1]::{0}.job_state,
                now() + interval '1 day', now(),
                now() - CASE WHEN i %% 5 = 0 THEN interval '-1 hour' ELSE interval '1 hour' END,
                jsonb_build_object('customer', i %% 1000)
            FROM generate_series(1, %(jobs)s) AS i
            """
        ).format(ident),
        {"queues": QUEUES, "jobs": JOBS},
    )
    conn.execute(sql.SQL("ANALYZE {}.job").format(ident))


@pytest.mark.slow
def test_fetch_is_an_index_scan_without_sort_over_a_million_jobs(
    pq: PgQueue, conn: psycopg.Connection[Any]
) -> None:
    ident = sql.Identifier(pq.schema)
    _load_a_million(pq, conn)
    query = Statements(pq.schema).job_fetch
    params = {"name": "q3", "limit": 10, "worker_id": "w", "heartbeat": 30.0, "turn": False}
    # The plan for these values, and the generic plan that psycopg's prepared statement
    # may switch to after a few executions.
    custom = _plan(conn, "EXPLAIN (FORMAT JSON) " + query, params)
    generic = _prepared_plan(conn, query, params, "force_generic_plan")
    assert any(re.search(r"\$\d", n.get("Index Cond", "")) for n in generic)  # it is generic
    for kind, nodes in (("custom", custom), ("generic", generic)):
        types = [n["Node Type"] for n in nodes]
        assert "Sort" not in types and "Incremental Sort" not in types, (kind, types)
        assert not [
            n for n in nodes if n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "job"
        ], (kind, types)
        assert any(n.get("Index Name") == "job_fetch_idx" for n in nodes), (kind, types)

    # It claims in priority-then-creation order: exactly the first due, waiting jobs.
    expected = [
        row[0]
        for row in conn.execute(
            sql.SQL(
                "SELECT id FROM {}.job WHERE name = 'q3' AND state < 'active' "
                "AND start_after <= now() ORDER BY priority DESC, id LIMIT 50"
            ).format(ident)
        ).fetchall()
    ]
    fetched = pq.fetch("q3", 20) + pq.fetch("q3", 30)
    assert [j.id for j in fetched] == expected
    assert all(j.priority == 6 and j.name == "q3" for j in fetched)

    # Completing a batch finds each job by its primary key, whatever the batch size.
    for size in (1, 1000):
        batch = json.dumps(
            [[j.id, j.run_id, {"ok": True}] for j in fetched] * (size // len(fetched) + 1)
        )
        nodes = _plan(
            conn,
            "EXPLAIN (FORMAT JSON) " + Statements(pq.schema).job_complete_many,
            {"batch": batch},
        )
        assert not [n for n in nodes if n["Node Type"] == "Seq Scan"], size
        assert any(n.get("Index Name") == "job_pkey" for n in nodes), size
    assert sorted(pq.complete([j.id for j in fetched], {"ok": True})) == sorted(expected)
    assert all(
        j is not None and j.state.value == "completed" and j.output == {"ok": True}
        for j in (pq.get_job_by_id(f.id) for f in fetched)
    )


@pytest.mark.slow
def test_one_per_key_fetch_reads_a_window_not_the_queue(
    pq: PgQueue, conn: psycopg.Connection[Any]
) -> None:
    # 200,000 waiting jobs on a singleton queue over 1,000 keys: a claim reads the first
    # rows in fetch order (an index range), never the whole queue.
    ident = sql.Identifier(pq.schema)
    pq.create_queue("sg", policy="singleton")
    conn.execute(
        sql.SQL(
            """INSERT INTO {0}.job (name, data, keep_until, policy, singleton_key, priority)
           SELECT 'sg', '{{}}'::jsonb, now() + interval '1 day', 'singleton', 'k' || (i % 1000),
               i % 3
           FROM generate_series(1, 200000) AS i"""
        ).format(ident)
    )
    conn.execute(sql.SQL("ANALYZE {}.job").format(ident))
    query = Statements(pq.schema).job_fetch_one_per_key
    params = {"name": "sg", "limit": 10, "window": 100, "worker_id": "w", "heartbeat": 30.0}
    with conn.transaction(force_rollback=True):
        nodes = _plan(conn, "EXPLAIN (ANALYZE, FORMAT JSON) " + query, params)
    assert not [
        n for n in nodes if n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "job"
    ]
    assert any(n.get("Index Name") == "job_fetch_idx" for n in nodes)
    read = max(
        n["Actual Rows"] * n["Actual Loops"] for n in nodes if n.get("Relation Name") == "job"
    )
    assert read <= 1000, read
    claimed = pq.fetch("sg", 10)
    assert len({j.singleton_key for j in claimed}) == 10
    assert all(j.priority == 2 for j in claimed)


@pytest.mark.parametrize("mode", ["force_custom_plan", "force_generic_plan"])
def test_a_grouped_claim_reads_only_index_ranges(
    pq: PgQueue, conn: psycopg.Connection[Any], mode: str
) -> None:
    pq.create_queue("tenants", group_concurrency=20)
    for _ in range(20):
        pq.insert([{"name": "tenants", "group": "a"} for _ in range(1000)])
    pq.insert([{"name": "tenants", "group": "b"} for _ in range(5)])
    for _ in range(5):  # some finished, as in a drain under way
        pq.complete([j.id for j in pq.fetch("tenants", 20)])
    query = Statements(pq.schema).job_fetch_grouped
    params = {
        "name": "tenants",
        "limit": 100,
        "worker_id": "w",
        "heartbeat": 30.0,
        "group_limit": 20,
        "ordered": False,
        "group_rate_count": 1000,
        "group_rate_seconds": 60.0,
        "cursor": "a",
        "at": pq.now(),
    }
    nodes = _prepared_plan(conn, query, params, mode)
    assert not [n for n in nodes if n["Node Type"] == "Seq Scan"]
    # Ranges of the group indexes, and primary-key probes for the ids chosen: nothing
    # reads a whole queue's jobs.
    indexes = {n["Index Name"] for n in nodes if "Index Name" in n}
    assert indexes <= {
        "job_group_idx",
        "job_group_active_idx",
        "job_pkey",
        "queue_pkey",
        "group_rate_pkey",
    }, indexes
    bitmaps = {n["Index Name"] for n in nodes if n["Node Type"] == "Bitmap Index Scan"}
    assert bitmaps <= {"job_pkey"}, bitmaps


@pytest.mark.slow
def test_find_jobs_reads_a_queues_index_over_a_million_jobs(
    pq: PgQueue, conn: psycopg.Connection[Any]
) -> None:
    pq.create_queue("rare")
    pq.insert([{"name": "rare", "data": {"customer": 7}} for _ in range(50)])
    _load_a_million(pq, conn)
    statements = Statements(pq.schema)
    # Planned for its values (find_jobs never prepares it), one read per kind of state: a
    # queue of a ninth of the rows may be read in id order through the primary key (its
    # first hundred come soon); a queue of fifty jobs never is, but through its ranges of
    # the indexes of each kind (its waiting ones: the fetch index).
    kinds = ("waiting", "active", "finished")
    for filters, given, wanted, pkey_allowed in (
        (("name",), {"name": "q3"}, kinds, True),
        (("name", "states"), {"name": "q3", "states": ["failed"]}, ("finished",), True),
        (("name",), {"name": "rare"}, kinds, False),
        (("name", "states"), {"name": "rare", "states": ["created"]}, ("waiting",), False),
        (("name", "data"), {"name": "rare", "data": '{"customer": 7}'}, kinds, False),
    ):
        params = {"after": 0, "limit": 100, **given}
        query = statements.job_find(filters, False, wanted)
        nodes = _plan(conn, "EXPLAIN (FORMAT JSON) " + query, params)
        # Partitioned, a queue is its partition's whole table: reading it whole (and
        # sorting) may cost the planner less than an index, and reads no other queue's jobs.
        assert PARTITIONED or "Seq Scan" not in [n["Node Type"] for n in nodes], filters
        used = {n["Index Name"] for n in nodes if n.get("Index Name")}
        assert used <= {"job_pkey", "job_fetch_idx", "job_active_idx", "job_name_id_idx"}
        assert PARTITIONED or pkey_allowed or "job_pkey" not in used, (given, used)
    assert PARTITIONED or "job_fetch_idx" in used  # the rare queue's waiting jobs
    # Page by page, the same jobs as a plain query in id order.
    expected = [
        row[0]
        for row in conn.execute(
            sql.SQL(
                "SELECT id FROM {}.job WHERE name = 'q3' AND state = 'failed' "
                "AND data @> '{{\"customer\": 10}}' ORDER BY id LIMIT 30"
            ).format(sql.Identifier(pq.schema))
        )
    ]
    first = pq.find_jobs("q3", state="failed", data_contains={"customer": 10}, limit=20)
    rest = pq.find_jobs(
        "q3", state="failed", data_contains={"customer": 10}, limit=10, after=first[-1].id
    )
    assert [j.id for j in first + rest] == expected and len(expected) == 30
