"""The SQL that docs/monitoring.md offers those without Prometheus runs, on a real schema,
and says what ``get_queue_stats`` says."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

import pgqueue

MONITORING = Path(__file__).resolve().parents[2] / "docs" / "monitoring.md"


def _queries(schema: str, conn: psycopg.Connection[Any]) -> list[str]:
    """The page's SQL blocks, on ``schema`` instead of ``pgqueue``."""
    blocks = re.findall(r"^```sql\n(.*?)^```", MONITORING.read_text(), re.MULTILINE | re.DOTALL)
    quoted = sql.Identifier(schema).as_string(conn)
    return [re.sub(r"\bpgqueue\.", f"{quoted}.", block) for block in blocks]


def test_the_monitoring_queries_agree_with_the_queue_stats(
    pq: pgqueue.PgQueue, schema: str, dsn: str
) -> None:
    for queue in ("ok", "bad", "busy"):
        pq.create_queue(queue)
    done = [pq.send("ok", {"n": n}) for n in range(3)]
    pq.send_after("ok", {"n": "later"}, 3600)  # deferred: not waiting yet
    pq.complete(pq.fetch("ok", 2), {"ok": True})
    failed = pq.send("bad", {})
    pq.fail(pq.fetch("bad"), {"type": "ValueError", "message": "no such user"}, retry=False)
    running = pq.send("busy", {})
    pq.fetch("busy")
    assert None not in (*done, failed, running)

    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        queries = _queries(schema, conn)
        assert len(queries) == 7, "the page's queries changed: update this test"
        rows = [conn.execute(query).fetchall() for query in queries]
    by_state, oldest, ended, waits, failures, active, maintained = rows

    stats = {s.name: s for s in pq.get_queue_stats()}
    expected = {
        (name, state.value): count
        for name, s in stats.items()
        for state, count in s.counts.items()
        if count
    }
    assert {(r["queue"], r["state"]): r["jobs"] for r in by_state} == expected
    assert [(r["queue"], r["waiting"]) for r in oldest] == [
        ("ok", 1)
    ]  # the deferred one waits later
    assert oldest[0]["oldest_waiting"] >= oldest[0]["most_overdue"] >= timedelta(0)
    assert {(r["queue"], r["completed"], r["failed"]) for r in ended} == {
        ("ok", 2, 0),
        ("bad", 0, 1),
    }
    assert {r["queue"] for r in waits} == {"ok", "bad", "busy"}
    assert all(r["p95_wait_seconds"] >= 0 for r in waits)
    assert [(r["id"], r["error_type"], r["message"]) for r in failures] == [
        (failed, "ValueError", "no such user")
    ]
    assert [(r["id"], r["queue"]) for r in active] == [(running, "busy")]
    assert len(maintained) == 1  # None here: the fixture's object runs no periodic pass
