"""Maintenance over a million finished jobs: bounded passes, while sends and fetches go on."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgqueue import MaintenanceSettings, PgQueue

pytestmark = pytest.mark.slow

ROWS = 1_000_000


def count(conn: psycopg.Connection[Any], schema: str, table: str) -> int:
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
    ).fetchone()
    assert row is not None
    return int(row[0])


class Traffic:
    """Sends, fetches and completes jobs of queue ``live`` on its own thread, timing each."""

    def __init__(self, pq: PgQueue) -> None:
        self.pq = pq
        self.latencies: list[float] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                start = time.perf_counter()
                job_id = self.pq.send("live", {"t": start})
                (job,) = self.pq.fetch("live")
                assert job.id == job_id
                self.pq.complete(job.id)
                self.latencies.append(time.perf_counter() - start)
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def summary(self) -> str:
        ordered = sorted(self.latencies)
        if not ordered:
            return "no round trips"
        p99 = ordered[int(len(ordered) * 0.99)]
        return (
            f"{len(ordered)} send+fetch+complete round trips, median "
            f"{ordered[len(ordered) // 2] * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
            f"max {ordered[-1] * 1000:.1f} ms"
        )


@pytest.mark.timeout(1800)
def test_maintenance_over_a_million_finished_jobs(
    dsn: str, schema: str, conn: psycopg.Connection[Any]
) -> None:
    settings = MaintenanceSettings()
    per_pass = settings.batch_size * settings.max_batches
    with PgQueue(dsn, schema=schema, maintenance=False) as pq:
        pq.maintenance_settings = settings
        pq.create_queue("bulk")
        pq.create_queue("live", expire_in=86400)  # not expired when the test moves time
        started = time.perf_counter()
        conn.execute(
            sql.SQL(
                """INSERT INTO {}.job (name, state, data, keep_until, created_at, started_at,
                       completed_at, delete_after)
                   SELECT 'bulk', 'completed', jsonb_build_object('i', i), now(),
                       now() - interval '3 hours', now() - interval '3 hours',
                       now() - interval '2 hours', 3600
                   FROM generate_series(1, %s) AS i"""
            ).format(sql.Identifier(schema)),
            (ROWS,),
        )
        conn.execute(sql.SQL("ANALYZE {}.job").format(sql.Identifier(schema)))
        print(f"\ninserted {ROWS} completed jobs in {time.perf_counter() - started:.1f} s")

        def drain(field: str) -> list[float]:
            """Passes until one finds nothing to do; returns each pass's duration."""
            durations = []
            with Traffic(pq) as traffic:
                while True:
                    start = time.perf_counter()
                    result = pq.maintain()
                    durations.append(time.perf_counter() - start)
                    assert result.ran
                    assert getattr(result, field) <= per_pass  # bounded per pass
                    if getattr(result, field) == 0:
                        break
            assert traffic.error is None, traffic.error
            print(
                f"{field}: {len(durations)} passes in {sum(durations):.1f} s "
                f"(longest {max(durations):.2f} s); meanwhile {traffic.summary()}"
            )
            # Sends and fetches went on: many round trips, none stuck behind a pass.
            assert len(traffic.latencies) >= len(durations)
            assert max(traffic.latencies) < max(durations)
            return durations

        archive_passes = drain("archived")
        assert len(archive_passes) >= ROWS // per_pass
        assert count(conn, schema, "archive") >= ROWS
        assert pq.get_queue_stats("bulk")[0].counts == dict.fromkeys(
            pq.get_queue_stats("bulk")[0].counts, 0
        )
        # An hour later (delete_after 3600 s) the archive empties, in bounded passes too.
        pq.move_clock(timedelta(hours=1, minutes=1))
        drain("deleted")
        remaining = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.archive WHERE name = 'bulk'").format(
                sql.Identifier(schema)
            )
        ).fetchone()
        assert remaining == (0,)
