"""The fault suite's tools: worker processes, a TCP proxy that loses replies, and the one
check every scenario ends with."""

from __future__ import annotations

import collections
import json
import os
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgqueue._sql import JOB_COLUMNS
from tests.conftest import child_environ

ROOT = Path(__file__).resolve().parents[2]
FINAL = ("completed", "failed", "expired", "cancelled")


class Cluster:
    """Worker processes of ``tests.faults.app`` on one schema, each started with ``args``."""

    def __init__(self, dsn: str, schema: str, out: Path) -> None:
        self.dsn, self.schema, self.out = dsn, schema, out
        self.procs: list[subprocess.Popen[bytes]] = []
        self.faults = 0

    def start(
        self, *args: str, dsn: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        environ = child_environ()
        environ.update(
            PGQUEUE_FAULT_DSN=dsn or self.dsn,
            PGQUEUE_FAULT_SCHEMA=self.schema,
            PGQUEUE_FAULT_OUT=str(self.out),
            **(env or {}),
        )
        with open(self.out / f"stderr-{len(self.procs)}.txt", "wb") as stderr:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pgqueue.cli",
                    "--log-level",
                    "INFO",
                    "worker",
                    "tests.faults.app:pq",
                    *args,
                ],
                cwd=ROOT,
                env=environ,
                stderr=stderr,
                stdout=subprocess.DEVNULL,
            )
        self.procs.append(proc)
        return proc

    def live(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        self.faults += 1

    def terminate(
        self, proc: subprocess.Popen[bytes], timeout: float = 60
    ) -> tuple[int | None, float]:
        """SIGTERM; the exit status and how long the process took to exit."""
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code: int | None = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = None
        return code, time.monotonic() - started

    def stop_all(self) -> list[int | None]:
        return [self.terminate(p)[0] for p in self.live()]

    def starts(self) -> collections.Counter[int]:
        """How many runs of each job started, over every process."""
        counts: collections.Counter[int] = collections.Counter()
        for path in self.out.glob("*.log"):
            for line in path.read_text().splitlines():
                counts[int(line.split()[1])] += 1
        return counts

    def stderr(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.out.glob("stderr-*.txt"))


@dataclass
class Verdict:
    """What became of a scenario's jobs."""

    scenario: str
    jobs: int
    lost: list[int] = field(default_factory=list)  # in neither table
    stranded: list[int] = field(default_factory=list)  # not in a final state
    unexpected: list[int] = field(default_factory=list)  # final, but not as the test expects
    stale_outcomes: list[int] = field(default_factory=list)  # output of a run that lost it
    reruns: int = 0  # runs beyond the first (at-least-once: a run cut short runs again)
    recovery_seconds: float = 0.0
    faults: int = 0
    notes: str = ""

    def assert_clean(self) -> None:
        report(self)
        assert not self.lost, f"lost jobs: {self.lost[:20]}"
        assert not self.stranded, f"jobs not finished: {self.stranded[:20]}"
        assert not self.unexpected, f"jobs in an unexpected state: {self.unexpected[:20]}"
        assert not self.stale_outcomes, f"outcomes of stale runs: {self.stale_outcomes[:20]}"


def report(verdict: Verdict) -> None:
    """Print a scenario's figures, and append them to $PGQUEUE_FAULT_REPORT (JSON lines)."""
    row = asdict(verdict)
    for key in ("lost", "stranded", "unexpected", "stale_outcomes"):
        row[key] = len(row[key])
    print(json.dumps(row))
    path = os.environ.get("PGQUEUE_FAULT_REPORT")
    if path:
        with open(path, "a") as out:
            out.write(json.dumps(row) + "\n")


def states(dsn: str, schema: str, ids: list[int]) -> dict[int, tuple[str, Any, int | None]]:
    """(state, output, run id) of each job, in the job table or the archive."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT id, state::text, output, run_id FROM {0}.job WHERE id = ANY(%(ids)s) "
                "UNION ALL SELECT id, state::text, output, run_id FROM {0}.archive "
                "WHERE id = ANY(%(ids)s)"
            ).format(sql.Identifier(schema)),
            {"ids": ids},
        ).fetchall()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def wait_final(dsn: str, schema: str, ids: list[int], timeout: float) -> float:
    """Poll until every job is in a final state (or the deadline); returns the seconds."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        found = states(dsn, schema, ids)
        if len(found) == len(ids) and all(s in FINAL for s, _, _ in found.values()):
            break
        time.sleep(0.2)
    return time.monotonic() - started


def verify(
    scenario: str,
    cluster: Cluster,
    ids: list[int],
    recovery: float,
    expected: Callable[[int], set[str]] = lambda _: {"completed"},
    notes: str = "",
) -> Verdict:
    """Every job in exactly one final state, the one expected; every completed job's output
    written by the run the database names as its last."""
    found = states(cluster.dsn, cluster.schema, ids)
    starts = cluster.starts()
    verdict = Verdict(
        scenario, len(ids), recovery_seconds=round(recovery, 1), faults=cluster.faults, notes=notes
    )
    for job_id in ids:
        if job_id not in found:
            verdict.lost.append(job_id)
            continue
        state, output, run_id = found[job_id]
        if state not in FINAL:
            verdict.stranded.append(job_id)
        elif state not in expected(job_id):
            verdict.unexpected.append(job_id)
        elif state == "completed" and isinstance(output, dict) and output.get("run") != run_id:
            verdict.stale_outcomes.append(job_id)
        verdict.reruns += max(starts.get(job_id, 0) - 1, 0)
    return verdict


def insert(
    dsn: str, schema: str, name: str, count: int, sleep: float | None = None, **options: Any
) -> list[int]:
    """``count`` jobs of queue ``name`` (created if need be), in batches; each run of a
    ``work`` job takes ``sleep`` seconds."""
    from pgqueue import PgQueue

    extra = {} if sleep is None else {"sleep": sleep}
    ids: list[int] = []
    with PgQueue(dsn, schema=schema, maintenance=False) as pq:
        pq.create_queue(name)
        for start in range(0, count, 1000):
            batch = pq.insert(
                [
                    {"name": name, "data": {"n": i, **extra}, **options}
                    for i in range(start, min(start + 1000, count))
                ]
            )
            ids += [i for i in batch if i is not None]
    return ids


class LostReplies:
    """A TCP proxy in front of PostgreSQL that can lose the reply of a claim: the statement
    runs and commits, the worker's connection drops before it sees a row. It reads the
    server's messages; on the row description of a claim (one column per job column) it
    closes the client's side at once and drains the server's side up to ReadyForQuery, so
    the server has committed before that connection closes too."""

    CLAIM_COLUMNS = len(JOB_COLUMNS.split(","))

    def __init__(self, dsn: str, cut: Callable[[], bool]) -> None:
        params = conninfo_to_dict(dsn)
        host, port = str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432)
        # A host that is a directory names the server's Unix socket (the embedded server).
        self._target: str | tuple[str, int] = (
            f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)
        )
        self._cut = cut
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.dsn = make_conninfo(dsn, host="127.0.0.1", port=self._listener.getsockname()[1])
        self.cuts = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if isinstance(self._target, str):
                server = socket.socket(socket.AF_UNIX)
                server.connect(self._target)
            else:
                server = socket.create_connection(self._target)
            threading.Thread(target=self._pipe, args=(client, server), daemon=True).start()

    def _pipe(self, client: socket.socket, server: socket.socket) -> None:
        pending = b""  # server bytes not yet parsed into whole messages
        startup = True  # the first server bytes may be the one-byte SSL answer
        try:
            while True:
                ready, _, _ = select.select([client, server], [], [])
                if client in ready:
                    data = client.recv(65536)
                    if not data:
                        return
                    server.sendall(data)
                if server in ready:
                    data = server.recv(65536)
                    if not data:
                        return
                    if startup and data[:1] in (b"N", b"S") and len(data) == 1:
                        client.sendall(data)
                        continue
                    startup = False
                    pending += data
                    forward, pending, cut = self._scan(pending)
                    client.sendall(forward)
                    if cut:
                        self.cuts += 1
                        client.close()  # the worker loses the reply...
                        self._drain(server, pending)  # ...the server commits it
                        return
        except OSError:
            return
        finally:
            for sock in (client, server):
                sock.close()

    def _scan(self, buffer: bytes) -> tuple[bytes, bytes, bool]:
        """Whole messages to forward, the rest, and whether a claim's reply begins."""
        offset = 0
        while len(buffer) - offset >= 5:
            kind = buffer[offset : offset + 1]
            (length,) = struct.unpack("!i", buffer[offset + 1 : offset + 5])
            if len(buffer) - offset < 1 + length:
                break
            if kind == b"T":
                (fields,) = struct.unpack("!h", buffer[offset + 5 : offset + 7])
                if fields == self.CLAIM_COLUMNS and self._cut():
                    return buffer[:offset], buffer[offset:], True
            offset += 1 + length
        return buffer[:offset], buffer[offset:], False

    @staticmethod
    def _drain(server: socket.socket, pending: bytes) -> None:
        server.settimeout(10)
        while b"Z\x00\x00\x00\x05" not in pending:  # ReadyForQuery: the Sync was done
            data = server.recv(65536)
            if not data:
                return
            pending = pending[-16:] + data


def sometimes(probability: float, seed: int = 7) -> Callable[[], bool]:
    """A cut policy: each claim's reply is lost with this probability."""
    rng = random.Random(seed)
    return lambda: rng.random() < probability
