"""The fault suite: real worker processes draining a known set of jobs while a fault is
injected, then one check (harness.verify): every job is in exactly one final state, the one
expected; no outcome of a stale run was kept; nothing is left active; and workers answer
SIGTERM within their timeout. Each scenario prints its figures (and appends them to
$PGQUEUE_FAULT_REPORT): docs/faults.md holds a run's table.
"""

from __future__ import annotations

import glob
import os
import random
import threading
import time

import psycopg
import pytest
from psycopg import sql

from pgqueue import InvalidOptionError, PgQueue
from tests.acceptance.conftest import RestartableServer, poll_until
from tests.faults.harness import Cluster, LostReplies, insert, sometimes, verify, wait_final

pytestmark = pytest.mark.slow


def started(cluster: Cluster, count: int, timeout: float = 60) -> None:
    poll_until(lambda: sum(cluster.starts().values()) >= count, timeout, f"{count} runs to start")


def test_workers_killed_again_and_again(cluster: Cluster) -> None:
    ids = insert(cluster.dsn, cluster.schema, "work", 4000, sleep=0.1)  # a drain of ~10 s
    args = ("--concurrency", "20", "--heartbeat", "2")
    for _ in range(2):
        cluster.start(*args)
    started(cluster, 300)
    rng = random.Random(3)
    for _ in range(4):  # one kill a second
        cluster.kill(rng.choice(cluster.live()))
        cluster.start(*args)
        time.sleep(1.0)
    recovery = wait_final(cluster.dsn, cluster.schema, ids, 120)
    verdict = verify(
        "SIGKILL a worker every second, 4 times (heartbeat 2 s)", cluster, ids, recovery
    )
    assert cluster.stop_all() == [0, 0], cluster.stderr()
    verdict.assert_clean()


def test_a_killed_workers_job_comes_back_within_a_minute_by_default(cluster: Cluster) -> None:
    (job_id,) = insert(cluster.dsn, cluster.schema, "hold", 1, retry_delay=0)
    first = cluster.start()  # default settings: a 30 s heartbeat
    started(cluster, 1)
    cluster.kill(first)
    cluster.start("--poll-interval", "0.5")
    recovery = wait_final(cluster.dsn, cluster.schema, [job_id], 90)
    verdict = verify(
        "SIGKILL a worker holding a job, default settings", cluster, [job_id], recovery
    )
    verdict.assert_clean()
    assert recovery < 60


def test_every_worker_connection_terminated_again_and_again(cluster: Cluster) -> None:
    ids = insert(cluster.dsn, cluster.schema, "work", 4000, sleep=0.1)
    for _ in range(2):
        cluster.start("--concurrency", "20")
    started(cluster, 300)
    with psycopg.connect(cluster.dsn, autocommit=True) as conn:
        for _ in range(20):
            killed = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'pgqueue-fault-worker' AND datname = current_database() "
                "ORDER BY random() LIMIT 2"
            ).fetchall()
            cluster.faults += len(killed)
            time.sleep(0.3)
    recovery = wait_final(cluster.dsn, cluster.schema, ids, 120)
    verdict = verify(
        "pg_terminate_backend of 2 worker connections, 20 times", cluster, ids, recovery
    )
    assert cluster.stop_all() == [0, 0], cluster.stderr()
    verdict.assert_clean()


def test_claims_whose_reply_is_lost(cluster: Cluster) -> None:
    proxy = LostReplies(cluster.dsn, sometimes(0.05))
    try:
        ids = insert(cluster.dsn, cluster.schema, "work", 2000)
        cluster.start("--concurrency", "20", dsn=proxy.dsn)
        recovery = wait_final(cluster.dsn, cluster.schema, ids, 180)
        cluster.faults = proxy.cuts
        verdict = verify(
            "the reply of 5% of claims lost after they committed", cluster, ids, recovery
        )
        assert cluster.stop_all() == [0], cluster.stderr()
    finally:
        proxy.close()
    verdict.assert_clean()
    assert proxy.cuts > 0 and "never received" in cluster.stderr()


def test_postgres_restarts_while_workers_drain(
    restartable_server: RestartableServer, cluster: Cluster
) -> None:
    cluster.dsn = restartable_server.dsn
    ids = insert(cluster.dsn, cluster.schema, "work", 3000, sleep=0.05)
    for _ in range(2):
        cluster.start("--concurrency", "20")
    started(cluster, 500)
    restartable_server.restart()
    cluster.faults += 1
    recovery = wait_final(cluster.dsn, cluster.schema, ids, 180)
    verdict = verify("PostgreSQL restarted during the drain", cluster, ids, recovery)
    assert cluster.stop_all() == [0, 0], cluster.stderr()
    verdict.assert_clean()


def test_workers_whose_clocks_are_an_hour_off(cluster: Cluster) -> None:
    library = next(iter(glob.glob("/usr/lib/*/faketime/libfaketime.so.1")), None)
    if library is None:
        if os.environ.get("PGQUEUE_REQUIRE_FAKETIME"):
            pytest.fail("faketime is not installed")
        pytest.skip("faketime is not installed")
    ids = insert(cluster.dsn, cluster.schema, "work", 2000)
    for offset in ("+1h", "-1h"):  # libfaketime in the worker process itself
        cluster.start("--concurrency", "20", env={"LD_PRELOAD": library, "FAKETIME": offset})
    recovery = wait_final(cluster.dsn, cluster.schema, ids, 120)
    verdict = verify("two workers, clocks +1 h and -1 h (maintenance on)", cluster, ids, recovery)
    assert cluster.stop_all() == [0, 0], cluster.stderr()
    verdict.assert_clean()
    assert verdict.reruns == 0  # nothing was expired early, so nothing ran twice


def test_poison_rows_outcomes_and_handlers(cluster: Cluster) -> None:
    dsn, schema = cluster.dsn, cluster.schema
    ids = insert(dsn, schema, "work", 1000)
    exits = insert(dsn, schema, "exits", 5, retry_limit=0)
    ident = sql.Identifier(schema)
    with psycopg.connect(dsn, autocommit=True) as conn:
        # Rows no option allows any more (written by hand or by an older version)...
        conn.execute(
            sql.SQL(
                "UPDATE {}.job SET expire_in = 1e308, retry_delay = 1e16, delete_after = 1e16, "
                "heartbeat_seconds = 1e16 WHERE id = ANY(%s)"
            ).format(ident),
            ([job_id for n, job_id in enumerate(ids) if n % 10 == 5],),
        )
        # ...and outcomes the database refuses.
        conn.execute(
            sql.SQL(
                "CREATE FUNCTION {0}.refuse() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'refused'; END $$; "
                "CREATE TRIGGER refuse BEFORE UPDATE ON {0}.job FOR EACH ROW "
                "WHEN (NEW.state = 'completed' AND (NEW.data->>'n')::int % 100 = 7) "
                "EXECUTE FUNCTION {0}.refuse()"
            ).format(ident)
        )
    refused = {job_id for n, job_id in enumerate(ids) if n % 100 == 7}
    cluster.faults = len(refused) + len(ids) // 10 + len(exits)
    for _ in range(2):
        cluster.start("--concurrency", "20")
    everything = ids + exits
    recovery = wait_final(dsn, schema, everything, 120)
    verdict = verify(
        "absurd values in rows, refused outputs, handlers raising SystemExit",
        cluster,
        everything,
        recovery,
        expected=lambda i: {"failed"} if i in refused or i in exits else {"completed"},
    )
    with PgQueue(dsn, schema=schema, maintenance=False) as pq:
        assert pq.maintain().errors == []  # maintenance runs on, whatever the rows hold
    assert cluster.stop_all() == [0, 0], cluster.stderr()
    verdict.assert_clean()


def test_pause_and_policy_changes_while_workers_drain(cluster: Cluster) -> None:
    dsn, schema = cluster.dsn, cluster.schema
    ids = insert(dsn, schema, "work", 3000, sleep=0.05)
    stop = threading.Event()
    changes: list[str] = []

    def operator() -> None:
        with PgQueue(dsn, schema=schema, maintenance=False) as pq:
            while not stop.is_set():
                for change in ("pause", "resume", "singleton", "short", "standard"):
                    try:
                        if change == "pause":
                            pq.pause_queue("work")
                        elif change == "resume":
                            pq.resume_queue("work")
                        else:
                            pq.update_queue("work", policy=change)
                        changes.append(change)
                    except InvalidOptionError:
                        changes.append(f"{change} refused")
                    time.sleep(0.2)

    thread = threading.Thread(target=operator)
    for _ in range(2):
        cluster.start("--concurrency", "20", "--poll-interval", "0.5")
    thread.start()
    try:
        started(cluster, 500)
    finally:
        stop.set()
        thread.join(30)
    with PgQueue(dsn, schema=schema, maintenance=False) as pq:
        pq.resume_queue("work")
        pq.update_queue("work", policy="standard")
    cluster.faults = len(changes)
    recovery = wait_final(dsn, schema, ids, 120)
    verdict = verify(
        "pause, resume and policy changes (some refused) every 0.2 s",
        cluster,
        ids,
        recovery,
        notes=", ".join(sorted(set(changes))),
    )
    assert cluster.stop_all() == [0, 0], cluster.stderr()
    verdict.assert_clean()


def test_misbehaving_handlers_and_sigterm(cluster: Cluster) -> None:
    dsn, schema = cluster.dsn, cluster.schema
    work = insert(dsn, schema, "work", 200)
    stuck = insert(dsn, schema, "stuck", 3, retry_limit=0, expire_in=1)
    stubborn = insert(dsn, schema, "stubborn", 3, retry_limit=0, expire_in=1)
    proc = cluster.start("--concurrency", "4", "--shutdown-timeout", "2")
    cluster.faults = len(stuck) + len(stubborn)
    everything = work + stuck + stubborn
    recovery = wait_final(dsn, schema, everything, 120)
    verdict = verify(
        "handlers stuck forever (sync) and ignoring cancellation (async), 4 slots",
        cluster,
        everything,
        recovery,
        expected=lambda i: {"completed"} if i in work else {"expired"},
    )
    # Stuck threads and a stubborn task are still there: SIGTERM ends it within its timeout
    # plus a few seconds all the same.
    code, seconds = cluster.terminate(proc)
    verdict.notes = f"SIGTERM answered in {seconds:.1f} s (shutdown timeout 2 s)"
    verdict.assert_clean()
    assert code == 0 and seconds < 2 + 10, (code, seconds, cluster.stderr())
