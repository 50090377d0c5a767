"""The soak: minutes of mixed faults at a steady load, on demand
(``PGQUEUE_SOAK_MINUTES=30 pytest tests/faults/test_soak.py -s``). It prints the figures
docs/faults.md reports: jobs, faults by kind, a worker's memory and the tables' size at the
start and the end, and the same verdict as every fault scenario."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import random
import threading
import time
from typing import Any

import psutil
import psycopg
import pytest
from psycopg import sql

from pgqueue import ConnectError, InvalidOptionError, PgQueue
from tests.faults.harness import Cluster, LostReplies, verify, wait_final

MINUTES = float(os.environ.get("PGQUEUE_SOAK_MINUTES") or 0)


def table_sizes(dsn: str, schema: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return {
            table: conn.execute(
                "SELECT pg_total_relation_size(%s)", [f'"{schema}".{table}']
            ).fetchone()[0]  # type: ignore[index]
            for table in ("job", "archive")
        }


@pytest.mark.skipif(not MINUTES, reason="on demand: set PGQUEUE_SOAK_MINUTES")
@pytest.mark.timeout(0)
def test_soak(cluster: Cluster) -> None:
    dsn, schema = cluster.dsn, cluster.schema
    lose = threading.Event()  # while set, the proxied worker loses the reply of each claim
    proxy = LostReplies(dsn, lose.is_set)
    env = {"PGQUEUE_FAULT_ARCHIVE_AFTER": "60"}
    args = ("--concurrency", "50", "--heartbeat", "5")
    steady = cluster.start(*args, dsn=proxy.dsn, env=env)  # never killed: its memory is read
    others = [cluster.start(*args, env=env) for _ in range(2)]
    ids: list[int] = []
    stop = threading.Event()

    def produce() -> None:  # about 300 jobs a second
        with PgQueue(dsn, schema=schema, maintenance=False) as pq:
            pq.create_queue("work")
            n = 0
            while not stop.is_set():
                try:
                    batch = pq.insert(
                        [{"name": "work", "data": {"n": n + i, "sleep": 0.01}} for i in range(30)]
                    )
                except ConnectError:  # as any producer would: try again (a batch whose
                    time.sleep(0.5)  # reply was lost is left out of the count)
                    continue
                ids.extend(i for i in batch if i is not None)
                n += 30
                time.sleep(0.1)

    producer = threading.Thread(target=produce)
    producer.start()
    time.sleep(30)  # warm up before the first reading
    rss_start = psutil.Process(steady.pid).memory_info().rss
    sizes_start = table_sizes(dsn, schema)
    faults: collections.Counter[str] = collections.Counter()
    rng = random.Random(11)
    deadline = time.monotonic() + MINUTES * 60
    with (
        PgQueue(dsn, schema=schema, maintenance=False) as operator,
        psycopg.connect(dsn, autocommit=True) as conn,
    ):
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(5, 15))
            fault = rng.choice(["kill", "terminate", "pause", "lost replies", "policy"])
            faults[fault] += 1
            if fault == "kill":
                victim = rng.choice(others)
                cluster.kill(victim)
                others[others.index(victim)] = cluster.start(*args, env=env)
            elif fault == "terminate":
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'pgqueue-fault-worker' "
                    "AND datname = current_database() ORDER BY random() LIMIT 2"
                )
            elif fault == "pause":
                operator.pause_queue("work")
                time.sleep(2)
                operator.resume_queue("work")
            elif fault == "lost replies":
                lose.set()
                time.sleep(1)
                lose.clear()
            else:  # a policy change and back (refused while jobs break it)
                with contextlib.suppress(InvalidOptionError):
                    operator.update_queue("work", policy="singleton")
                time.sleep(2)
                operator.update_queue("work", policy="standard")
    rss_end = psutil.Process(steady.pid).memory_info().rss
    sizes_end = table_sizes(dsn, schema)
    stop.set()
    producer.join(60)
    recovery = wait_final(dsn, schema, ids, 300)
    cluster.faults = sum(faults.values())
    verdict = verify(
        f"soak: {MINUTES:g} minutes of mixed faults at ~300 jobs/s",
        cluster,
        ids,
        recovery,
        notes=json.dumps(dict(faults)),
    )
    summary: dict[str, Any] = {
        "minutes": MINUTES,
        "jobs": len(ids),
        "faults": dict(faults),
        "lost_reply_cuts": proxy.cuts,
        "worker_rss_mb": [round(rss_start / 2**20, 1), round(rss_end / 2**20, 1)],
        "table_mb_start": {k: round(v / 2**20, 1) for k, v in sizes_start.items()},
        "table_mb_end": {k: round(v / 2**20, 1) for k, v in sizes_end.items()},
    }
    print(json.dumps(summary))
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.job").format(sql.Identifier(schema))
        ).fetchone()
    print(json.dumps({"job_rows_at_end": row[0] if row else None}))
    assert [code for code in cluster.stop_all()] == [0, 0, 0], cluster.stderr()
    proxy.close()
    verdict.assert_clean()
