"""Name rules, defaults and how the database is chosen."""

from __future__ import annotations

import os
import re
from typing import Any, TypeVar

from psycopg.conninfo import conninfo_to_dict

from .errors import InvalidDsnError, InvalidNameError, InvalidOptionError

T = TypeVar("T")

__all__ = [
    "DSN_ENV",
    "MAX_NAME_LENGTH",
    "check_count",
    "check_dsn",
    "check_name",
    "check_pool",
    "check_schema",
    "check_seconds",
    "describe_dsn",
    "resolve_dsn",
    "session_options",
]

DSN_ENV = "PGQUEUE_DATABASE_URL"
MAX_NAME_LENGTH = 100
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-/:]*\Z")
# Lower case so the schema never needs quoting by hand; short so "<schema>_jobs" fits a
# 63-byte NOTIFY channel name.
_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,49}\Z")


def check_count(what: str, value: object, most: int | None = None) -> int:
    """``value`` as a count of at least 1 (and at most ``most``): an int, not a bool.
    Raises InvalidOptionError naming ``what``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < 1
        or (most is not None and value > most)
    ):
        raise InvalidOptionError(f"{what} must be a positive integer, got {value!r}")
    return value


def check_seconds(what: str, value: object, most: float = 366 * 86400) -> float:
    """``value`` as a number of seconds from 0 to ``most`` (a year unless given): an int or
    float, not a bool. Raises InvalidOptionError naming ``what``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 <= value <= most  # NaN fails this too
    ):
        raise InvalidOptionError(f"{what} must be seconds from 0 to {most:g}, got {value!r}")
    return float(value)


def renamed(name: str, value: T | None, old: str, old_value: T | None) -> T | None:
    """The value of option ``name``, given under its earlier name ``old`` or its own (not
    both, unless equal)."""
    if old_value is None:
        return value
    if value is not None and value != old_value:
        raise InvalidOptionError(
            f"{name} and {old} are the same option (its earlier name): give one, got "
            f"{value!r} and {old_value!r}"
        )
    return old_value


def check_name(name: object, what: str = "queue") -> str:
    """Return ``name`` if it is a valid queue or event name, else raise InvalidNameError."""
    if not isinstance(name, str):
        raise InvalidNameError(f"{what} name must be a string, got {type(name).__name__}")
    if not name or len(name) > MAX_NAME_LENGTH or not _NAME.match(name):
        raise InvalidNameError(
            f"invalid {what} name {name!r}: use 1-{MAX_NAME_LENGTH} characters from "
            "letters, digits and _ . - / :, not starting with . - / or :"
        )
    return name


def check_schema(schema: object) -> str:
    """Return ``schema`` if it is a valid schema name, else raise InvalidNameError."""
    if not isinstance(schema, str) or not _SCHEMA.match(schema) or schema.startswith("pg_"):
        raise InvalidNameError(
            f"invalid schema name {schema!r}: use 1-50 characters from lower-case letters, "
            "digits and _, starting with a letter or _ (and not with pg_)"
        )
    return schema


def check_dsn(dsn: str) -> str:
    """Return ``dsn`` if libpq can parse it, else raise InvalidDsnError (password never shown)."""
    if not isinstance(dsn, str):
        raise InvalidDsnError(f"the DSN must be a string, got {type(dsn).__name__}")
    try:
        params = conninfo_to_dict(dsn)
    except Exception as exc:
        raise InvalidDsnError(
            f"invalid database connection string: {_strip_secret(str(exc).strip())}"
        ) from None
    port = str(params.get("port") or "")
    if port and not all(p.strip().isdigit() for p in port.split(",")):
        raise InvalidDsnError(f"invalid database connection string: bad port {port!r}")
    return dsn


PARTITION_ENV = "PGQUEUE_PARTITION"


def resolve_partition(partition: bool | None) -> bool:
    """Whether a schema created now gets the partitioned layout: the argument, else
    ``$PGQUEUE_PARTITION`` (``1``, ``true``, ``yes`` or ``on``), else False."""
    if partition is None:
        value = os.environ.get(PARTITION_ENV, "").strip().lower()
        if value not in {"", "0", "false", "no", "off", "1", "true", "yes", "on"}:
            raise InvalidOptionError(
                f"${PARTITION_ENV} must be 1/true/yes/on or 0/false/no/off, got {value!r}"
            )
        return value in {"1", "true", "yes", "on"}
    if not isinstance(partition, bool):
        raise InvalidOptionError(f"partition must be True, False or None, got {partition!r}")
    return partition


def resolve_dsn(dsn: str | None) -> str | None:
    """The DSN to use: the argument, else $PGQUEUE_DATABASE_URL, else None (embedded)."""
    if dsn is None:
        dsn = os.environ.get(DSN_ENV) or None
    return None if dsn is None else check_dsn(dsn)


def session_options(dsn: str) -> dict[str, Any]:
    """Connection parameters pgqueue adds to ``dsn``'s: ``application_name`` "pgqueue",
    unless the DSN or $PGAPPNAME names one, so that pg_stat_activity tells its connections
    apart."""
    if os.environ.get("PGAPPNAME") or "application_name" in conninfo_to_dict(dsn):
        return {}
    return {"application_name": "pgqueue"}


def check_pool(min_size: object, max_size: object) -> tuple[int, int]:
    """Pool sizes as ``(min_size, max_size)``: 0 <= min_size <= max_size, max_size >= 1
    (ints, not bools). Raises InvalidOptionError."""
    if (
        any(isinstance(v, bool) or not isinstance(v, int) for v in (min_size, max_size))
        or not 0 <= min_size <= max_size  # type: ignore[operator]
        or max_size < 1  # type: ignore[operator]
    ):
        raise InvalidOptionError(
            "pool sizes must be integers with 0 <= pool_min_size <= pool_max_size and "
            f"pool_max_size >= 1, got {min_size!r} and {max_size!r}"
        )
    return min_size, max_size  # type: ignore[return-value]


def describe_dsn(dsn: str) -> str:
    """Where a DSN points (host, port, database), without user or password."""
    try:
        params = conninfo_to_dict(dsn)
    except Exception:
        return "<unparsable dsn>"
    host = params.get("host") or params.get("hostaddr") or os.environ.get("PGHOST") or "localhost"
    port = params.get("port") or os.environ.get("PGPORT") or "5432"
    db = params.get("dbname") or os.environ.get("PGDATABASE") or "(default database)"
    return f"host={host} port={port} dbname={db}"


def _strip_secret(message: str) -> str:
    # libpq quotes the piece it could not parse, which may be the password: drop them all.
    message = re.sub(r'"[^"]*"', '"***"', message)
    return re.sub(r"(password\s*=\s*|:)[^@\s]*@", r"\1***@", message)
