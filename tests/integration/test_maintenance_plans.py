"""A maintenance pass with nothing due reads (almost) nothing, however many rows wait."""

from __future__ import annotations

import json
from typing import Any

import psycopg
from psycopg import sql

from pgqueue import PgQueue
from pgqueue._sql import Statements

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
