"""A fleet of worker processes on one PostgreSQL: how throughput and claim latency change
with the number of processes, and where the server spends its time meanwhile.

    python -m benchmarks.fleet [--dsn DSN] [--workers 1,2,4,8,16] [--jobs 30000]
                               [--repeat 3] [--pgbouncer]

For each fleet size N, N processes each run ``PgQueue.work()`` with default settings
(maintenance off) on a fresh schema, and:

1. latency phase: with every worker idle, jobs are sent one at a time every 10 ms; claim
   latency is ``started_at - created_at`` by the database's clock (send to claim);
2. throughput phase: a backlog of ``--jobs`` short jobs is inserted in one transaction
   into the paused queue, the job table is analyzed (unless ``--no-analyze``), the
   queue resumed and drained; throughput is jobs / (last ``completed_at`` - first
   ``started_at``).

From the resume to the last completion, a sampler reads, every 50 ms, the wait events of the
database's active backends (pg_stat_activity), its connections, and the locks its
backends wait for (pg_locks); the
CPU seconds of the database's backends and of the worker processes come from
/proc/PID/stat, and the WAL written from pg_current_wal_lsn() before and after (WAL and
the server's CPU are server-wide: other activity on the server counts too). CPU is
given per job and as cores busy (server and workers together);
the transactions committed in the database come from pg_stat_database.

``--pgbouncer`` routes the workers through a PgBouncer (session pooling, so LISTEN works)
started on a free port, when the ``pgbouncer`` binary is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

import pgqueue

QUEUE = "fleet"
SCHEMA = "fleet_bench"
TICK = os.sysconf("SC_CLK_TCK")
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/hfleet"


# -- the worker process -----------------------------------------------------------------------


def worker(dsn: str, schema: str) -> None:
    """One worker process: default settings, no maintenance, a handler that does nothing."""
    pq = pgqueue.PgQueue(dsn, schema=schema, maintenance=False, migrate=False)

    @pq.job(QUEUE)
    async def noop(data: Any) -> None:
        return None

    signal.signal(signal.SIGTERM, lambda *_: pq.stop_working())
    with pq:
        print("ready", flush=True)
        pq.work()


# -- measuring --------------------------------------------------------------------------------


def cpu_times(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds of each process still alive among ``pids``."""
    found = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        found[pid] = (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
    return found


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two readings by the processes alive at both."""
    return sum(after[pid] - before[pid] for pid in before.keys() & after.keys())


def postgres_pids() -> list[int]:
    """Every process named postgres on this machine (the server and its backends)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


async def backend_pids(conn: psycopg.AsyncConnection[Any], database: str) -> list[int]:
    rows = await (
        await conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [database],
        )
    ).fetchall()
    return [r[0] for r in rows]


async def sample(
    dsn: str, database: str, stop: asyncio.Event, waits: collections.Counter[str]
) -> dict[str, float]:
    """Count the wait events of the database's active backends until ``stop``."""
    samples = lock_waits = connections = 0
    busy: list[int] = []
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        while not stop.is_set():
            rows = await (
                await conn.execute(
                    "SELECT coalesce(wait_event_type, 'CPU') || ':' || coalesce(wait_event, '-')"
                    " FROM pg_stat_activity WHERE datname = %s AND state = 'active'"
                    " AND pid <> pg_backend_pid()",
                    [database],
                )
            ).fetchall()
            waits.update(r[0] for r in rows)
            busy.append(len(rows))
            lock_waits += (
                await (
                    await conn.execute(
                        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
                        " WHERE NOT l.granted AND a.datname = %s",
                        [database],
                    )
                ).fetchone()
            )[0]
            connections = max(
                connections,
                (
                    await (
                        await conn.execute(
                            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                            [database],
                        )
                    ).fetchone()
                )[0],
            )
            samples += 1
            await asyncio.sleep(0.05)
    return {
        "samples": samples,
        "active": statistics.mean(busy) if busy else 0.0,
        "lock_waits": lock_waits / max(samples, 1),
        "connections": connections,
    }


# -- running one fleet ------------------------------------------------------------------------


def fresh_schema(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))
    with pgqueue.PgQueue(dsn, schema=SCHEMA, maintenance=False) as pq:
        pq.create_queue(QUEUE)


def start_workers(dsn: str, count: int) -> list[subprocess.Popen[str]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.fleet", "--worker", dsn],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        for _ in range(count)
    ]
    for proc in procs:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"a worker did not start (exit {proc.poll()})")
    return procs


def stop_workers(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_done(conn: psycopg.Connection[Any], count: int, timeout: float = 300.0) -> None:
    query = sql.SQL("SELECT count(*) FROM {}.job WHERE state = 'completed'").format(
        sql.Identifier(SCHEMA)
    )
    deadline = time.monotonic() + timeout
    while conn.execute(query).fetchone()[0] < count:  # type: ignore[index]
        if time.monotonic() > deadline:
            raise RuntimeError("the fleet did not finish its jobs in time")
        time.sleep(0.02)


def latency_phase(dsn: str, count: int) -> tuple[float, float]:
    """Median and p95 of send-to-claim, in ms, of ``count`` jobs sent 10 ms apart."""
    with pgqueue.PgQueue(dsn, schema=SCHEMA, maintenance=False, migrate=False) as pq:
        for i in range(count):
            pq.send(QUEUE, {"i": i})
            time.sleep(0.01)
    with psycopg.connect(dsn, autocommit=True) as conn:
        wait_done(conn, count)
        row = conn.execute(
            sql.SQL(
                "SELECT percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY"
                " extract(epoch FROM started_at - created_at) * 1000) FROM {}.job"
            ).format(sql.Identifier(SCHEMA))
        ).fetchone()
        conn.execute(sql.SQL("DELETE FROM {}.job").format(sql.Identifier(SCHEMA)))
        assert row is not None
        return row[0][0], row[0][1]


async def throughput_phase(
    server_dsn: str, jobs: int, procs: list[subprocess.Popen[str]], analyze: bool
) -> dict[str, Any]:
    database = psycopg.conninfo.conninfo_to_dict(server_dsn).get("dbname", "postgres")
    producer = pgqueue.AsyncPgQueue(server_dsn, schema=SCHEMA, maintenance=False, migrate=False)
    async with (
        await psycopg.AsyncConnection.connect(server_dsn, autocommit=True) as conn,
        producer as pq,
    ):
        # The backlog is loaded while the queue is paused, so that the clock and the
        # counters start with it in place.
        await pq.pause_queue(QUEUE)
        await pq.insert({"name": QUEUE, "data": {"i": i}} for i in range(jobs))
        if analyze:
            # Statistics, as autovacuum would keep them for a queue in a steady state
            # (it is off here). ANALYZE also drops the plans the workers' connections
            # cached while the table was nearly empty.
            await conn.execute(sql.SQL("ANALYZE {}.job").format(sql.Identifier(SCHEMA)))
        backends = await backend_pids(conn, str(database))
        everything = postgres_pids()
        worker_pids = [p.pid for p in procs]
        lsn0 = (await (await conn.execute("SELECT pg_current_wal_lsn()")).fetchone())[0]  # type: ignore[index]
        commits0 = await commits(conn, str(database))
        cpu0 = [cpu_times(pids) for pids in (backends, everything, worker_pids)]
        waits: collections.Counter[str] = collections.Counter()
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample(server_dsn, str(database), stop, waits))
        began = time.monotonic()
        await pq.resume_queue(QUEUE)
        await asyncio.to_thread(_wait_done_sync, server_dsn, jobs)
        wall = time.monotonic() - began
        stop.set()
        sampled = await sampler
        cpu1 = [cpu_times(pids) for pids in (backends, everything, worker_pids)]
        used = [cpu_used(a, b) for a, b in zip(cpu0, cpu1, strict=True)]
        lsn_bytes = (
            await (
                await conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", [lsn0])
            ).fetchone()
        )[0]  # type: ignore[index]
        await asyncio.sleep(1.1)  # backends report their transactions within a second
        committed = await commits(conn, str(database)) - commits0
        span = (
            await (
                await conn.execute(
                    sql.SQL(
                        "SELECT extract(epoch FROM max(completed_at) - min(started_at)) FROM {}.job"
                    ).format(sql.Identifier(SCHEMA))
                )
            ).fetchone()
        )[0]  # type: ignore[index]
    seconds = float(span)
    cores = (used[1] + used[2]) / wall
    return {
        "jobs_per_s": jobs / seconds,
        "seconds": seconds,
        "wall": wall,
        # CPU per job, from the resume to the last completion
        "pg_backend_cpu": used[0] * 1e6 / jobs,
        "pg_all_cpu": used[1] * 1e6 / jobs,
        "worker_cpu": used[2] * 1e6 / jobs,
        "cpu_cores": cores,
        "wal_per_job": float(lsn_bytes) / jobs,
        "commits_per_1000": committed * 1000 / jobs,
        "waits": waits,
        **sampled,
    }


async def commits(conn: psycopg.AsyncConnection[Any], database: str) -> int:
    """The transactions committed in ``database`` so far, by its statistics."""
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    row = await (
        await conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", [database]
        )
    ).fetchone()
    assert row is not None
    return int(row[0])


def _wait_done_sync(dsn: str, count: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        wait_done(conn, count)


def run_fleet(
    worker_dsn: str, server_dsn: str, count: int, jobs: int, latency_jobs: int, analyze: bool
) -> dict[str, Any]:
    fresh_schema(server_dsn)
    procs = start_workers(worker_dsn, count)
    try:
        p50, p95 = latency_phase(server_dsn, latency_jobs)
        result = asyncio.run(throughput_phase(server_dsn, jobs, procs, analyze))
    finally:
        stop_workers(procs)
    return {"p50_ms": p50, "p95_ms": p95, **result}


# -- PgBouncer --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Bouncer:
    """A PgBouncer in session mode in a temporary directory, run as the postgres user."""

    def __init__(self, dsn: str) -> None:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
        self.dir = tempfile.mkdtemp(prefix="pgqueue-bouncer-")
        shutil.chown(self.dir, "postgres")
        self.port = free_port()
        db = info.get("dbname", "postgres")
        Path(self.dir, "users.txt").write_text('"postgres" ""\n')
        Path(self.dir, "pgbouncer.ini").write_text(
            f"[databases]\n{db} = host={info.get('host', '127.0.0.1')} "
            f"port={info.get('port', 5432)} dbname={db}\n"
            f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {self.port}\n"
            f"auth_type = trust\nauth_file = {self.dir}/users.txt\npool_mode = session\n"
            "max_client_conn = 2000\ndefault_pool_size = 200\n"
            f"unix_socket_dir = {self.dir}\nlogfile = {self.dir}/pgbouncer.log\n"
        )
        for name in ("users.txt", "pgbouncer.ini"):
            shutil.chown(Path(self.dir, name), "postgres")
        self.proc = subprocess.Popen(
            ["runuser", "-u", "postgres", "--", "pgbouncer", f"{self.dir}/pgbouncer.ini"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.dsn = psycopg.conninfo.make_conninfo(dsn, host="127.0.0.1", port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                psycopg.connect(self.dsn).close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    self.close()
                    raise
                time.sleep(0.1)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


# -- the report -------------------------------------------------------------------------------


def top_waits(waits: collections.Counter[str], samples: int, most: int = 4) -> str:
    return ", ".join(f"{name} {n / max(samples, 1):.1f}" for name, n in waits.most_common(most))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=os.environ.get("PGQUEUE_BENCH_DSN", DEFAULT_DSN))
    parser.add_argument("--workers", default="1,2,4,8,16")
    parser.add_argument("--jobs", type=int, default=30_000)
    parser.add_argument("--latency-jobs", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pgbouncer", action="store_true")
    parser.add_argument(
        "--no-analyze",
        dest="analyze",
        action="store_false",
        help="leave the job table without planner statistics (as with autovacuum off)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, SCHEMA)
        return 0
    bouncer = None
    if args.pgbouncer:
        if shutil.which("pgbouncer") is None:
            print("pgbouncer is not installed: the workers connect directly", file=sys.stderr)
        else:
            bouncer = Bouncer(args.dsn)
    worker_dsn = bouncer.dsn if bouncer else args.dsn
    print(f"# workers connect {'through PgBouncer (session)' if bouncer else 'directly'}")
    print(f"# job table {'analyzed' if args.analyze else 'without statistics'} before draining")
    print(
        "| workers | jobs/s | claim p50 ms | claim p95 ms | CPU µs/job: PG backends "
        "| all PG | workers | cores busy | WAL B/job | commits per 1000 jobs | connections "
        "| active backends "
        "| ungranted locks "
        "| top waits (backends per sample) | load avg |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    try:
        for count in [int(n) for n in args.workers.split(",")]:
            runs = [
                run_fleet(worker_dsn, args.dsn, count, args.jobs, args.latency_jobs, args.analyze)
                for _ in range(args.repeat)
            ]
            runs.sort(key=lambda r: r["jobs_per_s"])
            mid = runs[len(runs) // 2]  # the median run by throughput, shown whole
            rates = [r["jobs_per_s"] for r in runs]
            print(
                f"| {count} | {mid['jobs_per_s']:,.0f} ({min(rates):,.0f}-{max(rates):,.0f}) "
                f"| {statistics.median(r['p50_ms'] for r in runs):.1f} "
                f"| {statistics.median(r['p95_ms'] for r in runs):.1f} "
                f"| {mid['pg_backend_cpu']:.0f} | {mid['pg_all_cpu']:.0f} "
                f"| {mid['worker_cpu']:.0f} | {mid['cpu_cores']:.2f} | {mid['wal_per_job']:,.0f} "
                f"| {mid['commits_per_1000']:.0f} | {mid['connections']} "
                f"| {mid['active']:.1f} | {mid['lock_waits']:.1f} "
                f"| {top_waits(mid['waits'], mid['samples'])} | {os.getloadavg()[0]:.1f} |",
                flush=True,
            )
    finally:
        if bouncer is not None:
            bouncer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
