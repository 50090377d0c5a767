"""A maintenance pass with nothing due reads (almost) nothing, however many rows wait."""

from __future__ import annotations

import json
from typing import Any

import psycopg
from psycopg import sql

from pgqueue import PgQueue
from pgqueue._sql import Statements
from tests.plans import as_one_table

# Every column of the job table (the archive has them all, and more).
JOB_TABLE_COLUMNS = """id, priority, retry_count, retry_limit, retry_delay, retry_backoff, state,
    retry_delay_max, expire_in, heartbeat_seconds, delete_after, start_after, keep_until,
    created_at, started_at, heartbeat_at, completed_at, singleton_on, name, singleton_key,
    policy, dead_letter, worker_id, data, output, progress, attempt"""


def buffers_read(conn: psycopg.Connection[Any], query: str, params: dict[str, Any]) -> int:
    """Shared buffers a statement touches (in a rolled-back transaction)."""
    with conn.transaction(force_rollback=True):
        row = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + query, params).fetchone()
    assert row is not None
    plan = row[0] if isinstance(row[0], list) else json.loads(row[0])
    top = plan[0]["Plan"]
    return int(top.get("Shared Hit Blocks", 0)) + int(top.get("Shared Read Blocks", 0))


def test_idle_archive_and_delete_steps_read_only_due_rows(
    pq: PgQueue, conn: psycopg.Connection[Any]
) -> None:
    schema = sql.Identifier(pq.schema)
    pq.create_queue("q")
    # 50,000 failed jobs inside their week in the job table, 50,000 archived jobs not due.
    conn.execute(
        sql.SQL(
            """INSERT INTO {}.job (name, state, keep_until, completed_at)
               SELECT 'q', 'failed', now(), now() - interval '1 day' * random()
               FROM generate_series(1, 50000)"""
        ).format(schema)
    )
    conn.execute(
        sql.SQL(
            """WITH moved AS (
                   DELETE FROM {0}.job WHERE id IN (
                       SELECT id FROM {0}.job ORDER BY id LIMIT 50000) RETURNING *)
               INSERT INTO {0}.archive ({1}, archived_at, delete_at)
               SELECT {1}, now(), now() + interval '30 days' FROM moved"""
        ).format(schema, sql.SQL(JOB_TABLE_COLUMNS))
    )
    conn.execute(
        sql.SQL(
            """INSERT INTO {}.job (name, state, keep_until, completed_at)
               SELECT 'q', 'failed', now(), now() - interval '1 day' * random()
               FROM generate_series(1, 50000)"""
        ).format(schema)
    )
    conn.execute(sql.SQL("ANALYZE {}.job").format(schema))
    conn.execute(sql.SQL("ANALYZE {}.archive").format(schema))
    statements = Statements(pq.schema)
    params = {"limit": 1000, "completed_after": 3600, "failed_after": 7 * 86400}
    assert buffers_read(conn, statements.job_archive, params) < 50
    assert buffers_read(conn, statements.archive_delete, params) < 50
    assert buffers_read(conn, statements.job_expire_waiting, params) < 50
    result = pq.maintain()
    assert (result.archived, result.deleted) == (0, 0)
    # Once due, the same steps find them.
    params["failed_after"] = 0
    assert buffers_read(conn, statements.job_archive, params) > 50


def test_the_group_repair_reads_only_grouped_queues(
    pq: PgQueue, conn: psycopg.Connection[Any]
) -> None:
    # 50,000 waiting jobs without a group in a queue that is not grouped, and a grouped
    # queue whose jobs all have one: the pass that gives grouped queues' jobs a group
    # reads neither table wholesale.
    schema = sql.Identifier(pq.schema)
    pq.create_queue("plain")
    pq.create_queue("tenants", group_concurrency=2)
    conn.execute(
        sql.SQL(
            """INSERT INTO {0}.job (name, keep_until, group_key)
               SELECT CASE WHEN i % 10 = 0 THEN 'tenants' ELSE 'plain' END,
                   now() + interval '1 day', CASE WHEN i % 10 = 0 THEN 'a' END
               FROM generate_series(1, 50000) AS i"""
        ).format(schema)
    )
    conn.execute(sql.SQL("ANALYZE {}.job").format(schema))
    query = Statements(pq.schema).job_group_the_ungrouped
    with conn.transaction(force_rollback=True):
        row = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + query, {"name": None, "limit": 1000}
        ).fetchone()
    assert row is not None
    plan = row[0] if isinstance(row[0], list) else json.loads(row[0])
    nodes, rows_read = [as_one_table(conn, query, plan[0]["Plan"])], 0
    while nodes:
        node = nodes.pop()
        nodes += node.get("Plans", [])
        assert node["Node Type"] != "Seq Scan" or node["Relation Name"] != "job", node
        if node.get("Relation Name") == "job":
            rows_read += node["Actual Rows"] + node.get("Rows Removed by Filter", 0)
    assert rows_read <= 5000, rows_read  # the grouped queue's jobs, none of the others
