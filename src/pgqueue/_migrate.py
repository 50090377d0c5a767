"""Numbered, forward-only SQL migrations, applied under an advisory lock.

Migrations are the files ``NNNN_name.sql`` shipped in the package (``pgqueue/migrations``, or
``migrations/`` beside ``src/`` in a source checkout). Each is applied in its own transaction
and recorded in ``version``. Each of those transactions first takes a transaction-level
advisory lock per schema, so concurrent starters queue up, and re-reads the version once it
holds it: every migration runs exactly once however many processes start together, and no
lock outlives its transaction (a pooler in transaction mode hands the connection to others
after each one).

A schema's layout is chosen when it is created: by default one job table; with
``partition=True`` a job table partitioned by queue (``partitioned.sql``, applied with version 1,
so that every later migration applies to the partitioned table).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import psycopg
from psycopg.errors import InsufficientPrivilege

from ._config import resolve_partition
from ._db import Plan, Stmt
from ._sql import Statements
from .errors import MigrationError

__all__ = [
    "Migration",
    "MigrationStatus",
    "latest_version",
    "load_migrations",
    "migrate_plan",
    "partitioned_layout",
    "status_plan",
]

_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql\Z")


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    text: str


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    """Where a schema stands: the version applied (None if not installed) and what is pending.

    Example:
        ```python
        status = pq.migration_status()
        print(status.current, status.latest, [m.name for m in status.pending])
        ```
    """

    current: int | None
    latest: int
    pending: tuple[Migration, ...]

    @property
    def up_to_date(self) -> bool:
        """True when nothing is pending."""
        return not self.pending


def _migrations_dir() -> Path:
    packaged = resources.files("pgqueue") / "migrations"
    if packaged.is_dir():
        return Path(str(packaged))
    source = Path(__file__).resolve().parents[2] / "migrations"
    if source.is_dir():
        return source
    raise MigrationError("pgqueue's migrations are missing from this installation")


@cache
def load_migrations() -> tuple[Migration, ...]:
    """Every migration, in order."""
    found = []
    for path in sorted(_migrations_dir().iterdir()):
        match = _FILE.match(path.name)
        if match:
            found.append(Migration(int(match[1]), match[2], path.read_text("utf-8")))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migrations must be numbered 1..n without gaps, found {versions}")
    return tuple(found)


@cache
def partitioned_layout() -> str:
    """The text that turns a schema at version 1 into the partitioned layout."""
    return (_migrations_dir() / "partitioned.sql").read_text("utf-8")


def latest_version() -> int:
    """The version the code expects."""
    return load_migrations()[-1].version


def _status(current: int | None) -> MigrationStatus:
    migrations = load_migrations()
    latest = migrations[-1].version
    if current is not None and current > latest:
        raise MigrationError(
            f"the database schema is at version {current}, newer than this pgqueue "
            f"(which knows up to {latest}); upgrade pgqueue"
        )
    pending = tuple(m for m in migrations if current is None or m.version > current)
    return MigrationStatus(current, latest, pending)


def status_plan(stmts: Statements) -> Plan[MigrationStatus]:
    """Plan: read the schema's version."""
    (row,) = yield Stmt(stmts.version_table_exists)
    current = None
    if row["exists"]:
        (row,) = yield Stmt(stmts.version_current)
        current = row["version"]
    return _status(current)


def _check_layout(stmts: Statements, status: MigrationStatus, partition: bool) -> Plan[None]:
    """Plan: refuse the partitioned layout for a schema that exists without it."""
    if not partition or status.current is None:
        return
    (row,) = yield Stmt(stmts.job_table_partitioned)
    if not row["partitioned"]:
        raise MigrationError(
            f"schema {stmts.schema} exists with one job table, not partitioned by queue: the "
            "partitioned layout is chosen when a schema is created (migrate into a new schema "
            "and move the jobs, or leave partition off for this one)"
        )


def migrate_plan(
    stmts: Statements, target: int | None = None, *, partition: bool | None = None
) -> Plan[list[int]]:
    """Plan: apply pending migrations (up to ``target``); returns the versions applied.

    ``partition``: a schema created now gets the partitioned layout (None: the default,
    ``$PGQUEUE_PARTITION``, which leaves a schema that exists as it is); asked for
    explicitly, one that exists without it raises MigrationError. Runs on an autocommit
    connection: it opens and commits its own transactions.
    """
    explicit = partition is True
    partition = resolve_partition(partition)
    status = yield from status_plan(stmts)
    yield from _check_layout(stmts, status, explicit)
    if status.up_to_date:
        return []
    applied: list[int] = []
    try:
        yield Stmt(stmts.begin)
        yield Stmt(stmts.lock_migrations)
        (schema,) = yield Stmt(stmts.schema_exists)
        if not schema["exists"]:
            yield Stmt(stmts.schema_create)
        yield Stmt(stmts.version_create)
        yield Stmt(stmts.commit)
        while True:
            yield Stmt(stmts.begin)
            yield Stmt(stmts.lock_migrations)
            # Read under the lock: another process may have migrated meanwhile.
            status = yield from status_plan(stmts)
            yield from _check_layout(stmts, status, explicit)
            pending = [m for m in status.pending if target is None or m.version <= target]
            if not pending:
                yield Stmt(stmts.commit)
                return applied
            migration = pending[0]
            try:
                yield Stmt(stmts.migration(migration.text))
                if partition and migration.version == 1:
                    yield Stmt(stmts.migration(partitioned_layout()))
            except psycopg.Error as exc:
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name} failed: {exc}"
                    + (_OWNER_HINT if isinstance(exc, InsufficientPrivilege) else "")
                ) from exc
            yield Stmt(stmts.version_insert, {"version": migration.version, "name": migration.name})
            yield Stmt(stmts.commit)
            applied.append(migration.version)
    except InsufficientPrivilege as exc:
        yield Stmt(stmts.rollback)
        raise MigrationError(
            f"cannot create schema {stmts.schema}'s tables: {exc.diag.message_primary}{_OWNER_HINT}"
        ) from exc
    except BaseException:
        yield Stmt(stmts.rollback)
        raise


_OWNER_HINT = (
    " (run `pgqueue migrate` as the schema's owner, or as a role that may create "
    "schemas in the database if it does not exist yet)"
)
