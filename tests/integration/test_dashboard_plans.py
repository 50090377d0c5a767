"""The dashboard's reads at a million jobs: the last hour's throughput reads an index range
of the finished jobs, and a search by singleton key or group reads the key's (or group's)
range of an index, in every kind of state, never the job table whole."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgqueue import PgQueue
from pgqueue._sql import Statements

from .test_fetch_plan import _plan

JOBS = 1_000_000


def _load(pq: PgQueue, conn: psycopg.Connection[Any]) -> None:
    """A million jobs over nine queues in every state, the finished ones ending over the
    last day; every 50th has a singleton key, every 7th a group."""
    for i in range(9):
        pq.create_queue(f"q{i}")
    ident = sql.Identifier(pq.schema)
    conn.execute(
        sql.SQL(
            """
            INSERT INTO {0}.job (name, state, keep_until, completed_at, data, singleton_key,
                group_key)
            SELECT 'q' || (i %% 9), s.state, now() + interval '1 day',
                CASE WHEN s.state > 'active'
                    THEN now() - make_interval(secs => (i::bigint * 7919) %% 86400) END,
                jsonb_build_object('customer', i %% 1000),
                CASE WHEN i %% 50 = 0 THEN 'key-' || i END,
                CASE WHEN i %% 7 = 0 THEN 'tenant-' || (i %% 100) END
            FROM generate_series(1, %(jobs)s) AS i
            CROSS JOIN LATERAL (SELECT
                (ARRAY['created', 'completed', 'failed', 'completed', 'retry', 'cancelled',
                       'completed', 'expired'])[i %% 8 + 1]::{0}.job_state AS state) AS s
            """
        ).format(ident),
        {"jobs": JOBS},
    )
    conn.execute(sql.SQL("ANALYZE {}.job").format(ident))


@pytest.mark.slow
def test_the_dashboards_reads_use_index_ranges_at_a_million_jobs(
    pq: PgQueue, conn: psycopg.Connection[Any]
) -> None:
    _load(pq, conn)
    statements = Statements(pq.schema)
    for name in (None, "q3"):
        params = {"name": name, "width": 300.0, "buckets": 12}
        nodes = _plan(conn, "EXPLAIN (FORMAT JSON) " + statements.queue_throughput, params)
        assert "Seq Scan" not in [n["Node Type"] for n in nodes], name
        used = {n.get("Index Name") for n in nodes} - {None}
        assert used == {"job_finished_state_idx"}, used
    kinds = ("waiting", "active", "finished")
    for filters, given, index in (
        (("key",), {"key": "key-500000"}, "job_singleton_key_id_idx"),
        (("name", "key"), {"name": "q5", "key": "key-500000"}, "job_singleton_key_id_idx"),
        (("group",), {"group": "tenant-56"}, "job_group_key_id_idx"),
        (("name", "group"), {"name": "q2", "group": "tenant-56"}, "job_group_key_id_idx"),
    ):
        for wanted in (kinds, ()):
            query = statements.job_find(filters, False, wanted)
            params = {"after": 0, "limit": 50, **given}
            nodes = _plan(conn, "EXPLAIN (FORMAT JSON) " + query, params)
            assert "Seq Scan" not in [n["Node Type"] for n in nodes], (filters, wanted)
            used = {n.get("Index Name") for n in nodes} - {None}
            assert index in used and "job_pkey" not in used, (filters, wanted, used)
    # Through the API: the last hour's counts are the jobs that finished in it (counted
    # before and after, as the hour moves on meanwhile).
    count = sql.SQL(
        "SELECT count(*) FROM {}.job WHERE state IN ('completed', 'failed', 'expired') "
        "AND completed_at > now() - interval '1 hour'"
    ).format(sql.Identifier(pq.schema))
    before = conn.execute(count).fetchall()[0][0]
    rates = pq.get_queue_throughput()
    after = conn.execute(count).fetchall()[0][0]
    total = sum(c + f for series in rates.values() for c, f in series)
    assert before >= total >= after > 0
    assert all(len(series) == 12 for series in rates.values()) and len(rates) == 9
