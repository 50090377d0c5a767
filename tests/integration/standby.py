"""A primary and its hot standby, made for a test module: a fresh cluster (initdb) on a
free port, and a pg_basebackup of it started as a streaming standby on another. The
server binaries are ``$PGQUEUE_TEST_PG_BIN``, else PostgreSQL 15's Debian location; run
as root, the servers run as the ``postgres`` user."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

PG_BIN_ENV = "PGQUEUE_TEST_PG_BIN"
DEFAULT_BIN = "/usr/lib/postgresql/15/bin"
TOOLS = ("initdb", "pg_ctl", "pg_basebackup", "postgres")
# A cluster that starts in a second: nothing it holds must survive a crash.
SETTINGS = """
listen_addresses = '127.0.0.1'
unix_socket_directories = '{dir}'
port = {port}
fsync = off
synchronous_commit = off
autovacuum = off
shared_buffers = 16MB
max_connections = 40
max_wal_senders = 4
wal_level = replica
"""


@dataclass(frozen=True)
class Pair:
    """The DSNs of a primary and of its hot standby."""

    primary: str
    standby: str

    def replayed(self, timeout: float = 15.0) -> None:
        """Wait until the standby has replayed everything the primary has written: until
        it shows a row the primary writes now. (A WAL position would not do: the primary's
        next insert position may lie past a page header that no record ends at.)"""
        mark = uuid.uuid4().hex
        with psycopg.connect(self.primary, autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS replay_mark (mark text)")
            conn.execute("INSERT INTO replay_mark VALUES (%s)", [mark])
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.standby, autocommit=True) as conn:
            while True:
                try:
                    row = conn.execute(
                        "SELECT count(*) FROM replay_mark WHERE mark = %s", [mark]
                    ).fetchone()
                except psycopg.errors.UndefinedTable:
                    row = None
                if row is not None and row[0]:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError("the standby did not replay what the primary wrote")
                time.sleep(0.02)


def missing_tools() -> str | None:
    """Why a standby cannot be made here, or None."""
    bin_dir = Path(os.environ.get(PG_BIN_ENV, DEFAULT_BIN))
    absent = [t for t in TOOLS if not (bin_dir / t).exists()]
    if absent:
        return f"PostgreSQL server binaries {absent} not in {bin_dir} (set ${PG_BIN_ENV})"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root, and no runuser to run PostgreSQL as the postgres user"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(*argv: str) -> None:
    bin_dir = Path(os.environ.get(PG_BIN_ENV, DEFAULT_BIN))
    command = [str(bin_dir / argv[0]), *argv[1:]]
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    subprocess.run(command, check=True, capture_output=True, timeout=60)


@contextmanager
def primary_and_standby() -> Iterator[Pair]:
    """Start a primary and a streaming hot standby of it; stop both and remove their
    directories after."""
    root = Path(tempfile.mkdtemp(prefix="pgqueue-standby-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    primary, standby = root / "primary", root / "standby"
    ports = _free_port(), _free_port()
    started: list[Path] = []
    try:
        _run("initdb", "-D", str(primary), "-U", "postgres", "-A", "trust", "--no-sync")
        with (primary / "postgresql.conf").open("a") as conf:
            conf.write(SETTINGS.format(dir=root, port=ports[0]))
        _run("pg_ctl", "-D", str(primary), "-l", str(root / "primary.log"), "-w", "start")
        started.append(primary)
        _run(
            *("pg_basebackup", "-D", str(standby), "-h", "127.0.0.1", "-p", str(ports[0])),
            *("-U", "postgres", "-R", "-X", "stream", "-c", "fast", "--no-sync"),
        )
        with (standby / "postgresql.auto.conf").open("a") as conf:
            conf.write(f"port = {ports[1]}\nhot_standby = on\n")
        _run("pg_ctl", "-D", str(standby), "-l", str(root / "standby.log"), "-w", "start")
        started.append(standby)
        pair = Pair(*(f"postgresql://postgres@127.0.0.1:{p}/postgres" for p in ports))
        with psycopg.connect(pair.standby) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        yield pair
    finally:
        for data in reversed(started):
            _run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
