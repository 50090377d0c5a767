"""The ``PGQUEUE`` Django setting, read and checked (pure: no database)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from psycopg.conninfo import make_conninfo

from pgqueue import PgQueue

__all__ = ["QueueSettings", "django_dsn", "load_settings"]

_KEYS = {"DATABASE", "DSN", "SCHEMA", "OPTIONS", "WORKER", "AUTODISCOVER", "MIGRATE"}
# PgQueue's constructor options a user may set (dsn and schema have keys of their own).
_OPTIONS = set(inspect.signature(PgQueue.__init__).parameters) - {"self", "dsn", "schema"}
# work()'s options a worker's defaults may set (the worker command owns signal handling
# and draining).
_WORKER = set(inspect.signature(PgQueue.work).parameters) - {
    "self",
    "install_signal_handlers",
    "until_empty",
}
# Django's own connection options, which libpq does not know.
_DJANGO_ONLY = {
    "isolation_level",
    "assume_role",
    "server_side_binding",
    "pool",
    "cursor_factory",
    "context",
    "prepare_threshold",
}


@dataclass(frozen=True)
class QueueSettings:
    """What ``settings.PGQUEUE`` asks for, checked."""

    database: str | None = "default"  # the alias whose connection producing calls use
    dsn: str | None = None  # None: made from DATABASES[database] when the queue starts
    schema: str = "pgqueue"
    options: dict[str, Any] = field(default_factory=dict)
    worker: dict[str, Any] = field(default_factory=dict)
    autodiscover: tuple[str, ...] = ("jobs",)
    migrate: bool = True  # run pgqueue's migrations after Django's ``migrate``


def _bad(message: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"settings.PGQUEUE: {message}")


def _mapping(value: object, key: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _bad(f"{key} must be a dict, got {type(value).__name__}")
    unknown = sorted(str(k) for k in value if k not in allowed)
    if unknown:
        raise _bad(
            f"unknown {key} key(s) {', '.join(unknown)} (known: {', '.join(sorted(allowed))})"
        )
    return dict(value)


def load_settings() -> QueueSettings:
    """Read ``settings.PGQUEUE`` (absent means every default); raise ImproperlyConfigured
    naming what is wrong."""
    raw = getattr(settings, "PGQUEUE", {})
    given = _mapping(raw, "PGQUEUE", _KEYS)
    dsn = given.get("DSN")
    # A DSN of its own puts pgqueue outside Django's connections, unless DATABASE says
    # which alias is the same database (reached another way: a pooler, another role).
    database = given.get("DATABASE", "default" if dsn is None else None)
    if database is not None:
        if not isinstance(database, str):
            raise _bad(f"DATABASE must be a database alias or None, got {database!r}")
        if database not in settings.DATABASES:
            raise _bad(f"DATABASE {database!r} is not in settings.DATABASES")
        engine = settings.DATABASES[database].get("ENGINE", "")
        if "postgresql" not in str(engine) and "postgis" not in str(engine):
            raise _bad(
                f"DATABASE {database!r} uses {engine!r}: pgqueue needs PostgreSQL (set "
                "DATABASE to a PostgreSQL alias, or to None with a DSN)"
            )
    elif dsn is None:
        raise _bad("with DATABASE None (no Django connection), give DSN")
    if dsn is not None and (not isinstance(dsn, str) or not dsn):
        raise _bad(f"DSN must be a database URL, got {dsn!r}")
    schema = given.get("SCHEMA", "pgqueue")
    if not isinstance(schema, str):
        raise _bad(f"SCHEMA must be a string, got {schema!r}")
    discover = given.get("AUTODISCOVER", ("jobs",))
    if isinstance(discover, str) or not all(
        isinstance(m, str) and m.isidentifier() for m in discover
    ):
        raise _bad(f"AUTODISCOVER must be a list of module names, got {discover!r}")
    migrate = given.get("MIGRATE", True)
    if not isinstance(migrate, bool):
        raise _bad(f"MIGRATE must be True or False, got {migrate!r}")
    return QueueSettings(
        database=database,
        dsn=dsn,
        schema=schema,
        options=_mapping(given.get("OPTIONS", {}), "OPTIONS", _OPTIONS),
        worker=_mapping(given.get("WORKER", {}), "WORKER", _WORKER),
        autodiscover=tuple(discover),
        migrate=migrate,
    )


def django_dsn(alias: str) -> str:
    """A libpq connection string for Django's database ``alias``, as Django connects to it
    now (in tests, the test database)."""
    params = connections[alias].settings_dict
    conninfo: dict[str, Any] = {}
    for key, name in (("NAME", "dbname"), ("USER", "user"), ("PASSWORD", "password")):
        if params.get(key):
            conninfo[name] = params[key]
    for key, name in (("HOST", "host"), ("PORT", "port")):
        if params.get(key):
            conninfo[name] = str(params[key])
    for key, value in (params.get("OPTIONS") or {}).items():
        if key not in _DJANGO_ONLY and isinstance(value, str | int) and not isinstance(value, bool):
            conninfo[key] = value
    return make_conninfo("", **conninfo)
