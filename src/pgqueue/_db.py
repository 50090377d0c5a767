"""Plans, and the one place psycopg errors become pgqueue errors.

Every operation is written once, as a *plan*: a generator that yields :class:`Stmt` objects,
receives each statement's rows, and returns the operation's result. ``run_async`` (in
``_async/runner.py``) and its generated twin ``run_sync`` drive a plan on a
``psycopg.AsyncConnection`` or a ``psycopg.Connection``: that is how the async and blocking
APIs share one core.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg import pq
from psycopg.adapt import AdaptersMap
from psycopg.types.json import JsonbLoader, JsonLoader

from ._config import describe_dsn
from .errors import (
    ConnectError,
    DatabaseError,
    InvalidInputError,
    InvalidOptionError,
    InvalidPayloadError,
    PgQueueError,
    QueueNotFoundError,
)

__all__ = [
    "Plan",
    "Row",
    "Stmt",
    "connect_error",
    "foreign_json",
    "has_rows",
    "load_json",
    "refused",
    "translate",
]

Row = dict[str, Any]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Stmt:
    """One statement of a plan: the query and its parameters; rows come back as dicts,
    or as tuples when ``tuples`` (the hot path, where building dicts costs). ``prepare``
    False keeps psycopg from preparing it: planned for its values every time (a generic
    plan would suit some values and read a whole table for others)."""

    query: str
    params: Mapping[str, Any] | None = None
    tuples: bool = False
    prepare: bool | None = None


Plan = Generator[Stmt, list[Any], T]


_JSON_LOADERS = (("json", JsonLoader), ("jsonb", JsonbLoader))
_JSON_OIDS = {name: psycopg.postgres.types[name].oid for name, _ in _JSON_LOADERS}


def foreign_json(adapters: AdaptersMap) -> bool:
    """Whether ``adapters`` load json or jsonb otherwise than psycopg does by default (a
    caller's connection: Django's loads jsonb as text)."""
    return any(
        adapters.get_loader(_JSON_OIDS[name], pq.Format.TEXT) is not loader
        for name, loader in _JSON_LOADERS
    )


def load_json(adapters: AdaptersMap) -> None:
    """Make ``adapters`` (a cursor's) load json and jsonb as Python values."""
    for name, loader in _JSON_LOADERS:
        adapters.register_loader(name, loader)


def has_rows(cur: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]) -> bool:
    """Whether the cursor's statement returned rows (what ``cur.description is not None``
    says, without building the column descriptions)."""
    result = cur.pgresult
    return result is not None and result.status == _TUPLES_OK


_TUPLES_OK = pq.ExecStatus.TUPLES_OK


def translate(exc: psycopg.Error) -> PgQueueError:
    """The pgqueue error for a psycopg error (the caller keeps it as ``__cause__``)."""
    diag = exc.diag
    if isinstance(exc, pg_errors.ForeignKeyViolation) and diag.constraint_name == (
        "queue_dead_letter_fkey"
    ):
        return QueueNotFoundError(_detail_value(diag.message_detail) or "dead_letter")
    if isinstance(exc, pg_errors.ForeignKeyViolation) and diag.constraint_name in (
        "subscription_queue_fkey",
        "schedule_queue_fkey",
    ):
        return QueueNotFoundError(_detail_value(diag.message_detail) or "queue")
    if isinstance(exc, pg_errors.InvalidTextRepresentation | pg_errors.UntranslatableCharacter):
        return InvalidPayloadError(f"the database refused the data: {diag.message_primary}")
    if isinstance(exc, pg_errors.NumericValueOutOfRange | pg_errors.DatetimeFieldOverflow):
        return InvalidOptionError(f"value out of range: {diag.message_primary}")
    if isinstance(exc, pg_errors.InvalidParameterValue):
        return InvalidInputError(diag.message_primary or str(exc))
    state = exc.sqlstate or ""
    if state.startswith("54"):  # program limit exceeded: a value too large to store
        return InvalidPayloadError(f"the database refused it as too large: {exc}")
    if isinstance(exc, psycopg.OperationalError) and (not state or state.startswith(("08", "57P"))):
        return ConnectError(f"database connection failed: {exc}")
    error = DatabaseError(f"{type(exc).__name__}: {diag.message_primary or exc}")
    # Out of resources, a lock that timed out, a deadlock or a serialization failure.
    error.transient = state.startswith(("53", "55P03", "40"))
    return error


def connect_error(dsn: str, exc: BaseException) -> ConnectError:
    """A ConnectError that names where we tried to connect, never the password; when the
    server refuses more connections, it says what to do about it."""
    reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    if refused(exc):
        reason += _FULL_HINT
    return ConnectError(f"cannot connect to PostgreSQL at {describe_dsn(dsn)}: {reason}")


def refused(exc: BaseException) -> bool:
    """Whether ``exc`` is PostgreSQL refusing a connection for want of free slots."""
    return any(sign in str(exc) for sign in _FULL)


# What PostgreSQL says when max_connections, or a role's or a database's connection
# limit, is reached (SQLSTATE 53300, which a failed connection attempt does not carry).
_FULL = ("too many clients", "too many connections", "connection slots are reserved")
_FULL_HINT = (
    " (PostgreSQL refuses more connections: lower pgqueue's pool_max_size / --pool-size, "
    "raise max_connections, or put PgBouncer in front; see docs/scaling.md)"
)


def _detail_value(detail: str | None) -> str | None:
    # 'Key (dead_letter)=(nope) is not present in table "queue".'
    if detail and ")=(" in detail:
        return detail.split(")=(", 1)[1].split(")", 1)[0]
    return None
