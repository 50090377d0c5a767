"""The registry of the handlers workers serve (migration 19): which application registered
which handler for which queue, so that applications sharing a schema learn when they would
take each other's jobs.

A worker writes one row per handler it serves at start, and again every
``REGISTRY_REFRESH`` seconds while it runs; a row no worker refreshed for
``REGISTRY_RECENT`` seconds counts no more (maintenance deletes it). Two handlers
*conflict* when they serve a common queue (the same name, or a name one's pattern matches),
belong to different applications and differ in fingerprint: the handler (module:qualname)
and the options given at ``@pq.job``. The same application with another fingerprint is that
application's newer code (a deploy): its row is replaced, without a warning.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

from ._db import Plan, Stmt
from ._registry import JobDefinition, is_pattern, pattern_regex
from ._sql import Statements
from .errors import InvalidOptionError

__all__ = [
    "ON_CONFLICT",
    "REGISTRY_LOCK_TIMEOUT",
    "REGISTRY_RECENT",
    "REGISTRY_REFRESH",
    "Conflict",
    "HandlerInfo",
    "OnConflict",
    "Registration",
    "check_app_name",
    "check_on_conflict",
    "conflict_message",
    "default_app",
    "handler_id",
    "list_plan",
    "register_plan",
    "registrations",
]

# Seconds after which a registration no worker refreshed is ignored (and deleted).
REGISTRY_RECENT = 3600.0
# Seconds between a running worker's refreshes of its rows.
REGISTRY_REFRESH = 300.0
# Seconds a registration waits for another's to end before it gives up.
REGISTRY_LOCK_TIMEOUT = 10.0

OnConflict = Literal["warn", "error"]
ON_CONFLICT: tuple[OnConflict, ...] = ("warn", "error")


def check_on_conflict(value: object) -> OnConflict:
    """``value`` if it is one of ON_CONFLICT, else InvalidOptionError."""
    if value not in ON_CONFLICT:
        raise InvalidOptionError(f"on_conflict must be 'warn' or 'error', got {value!r}")
    return value


def check_app_name(value: object) -> str | None:
    """``value`` if it is None or a name of 1 to 200 printable characters."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > 200 or not value.isprintable():
        raise InvalidOptionError(
            f"app_name must be a name of 1 to 200 printable characters, got {value!r}"
        )
    return value


def _named(func: Callable[..., Any]) -> Any:
    """What names a handler: the function a partial wraps, the class of a callable object
    (never a repr, which holds an address and would change at each start)."""
    while isinstance(func, functools.partial):
        func = func.func
    return func if hasattr(func, "__qualname__") else type(func)


def handler_id(func: Callable[..., Any]) -> str:
    """``module:qualname`` of a handler."""
    named = _named(func)
    return f"{getattr(named, '__module__', None) or '?'}:{named.__qualname__}"


def default_app(func: Callable[..., Any]) -> str:
    """The application a handler belongs to when none is named: its module's top-level
    package (for a script run as ``__main__``, the script's file name)."""
    top = (getattr(_named(func), "__module__", None) or "?").partition(".")[0]
    if top == "__main__":
        path = getattr(sys.modules.get("__main__"), "__file__", None)
        if path:  # a package run with -m names its directory
            file = Path(path)
            return file.parent.name if file.stem == "__main__" else file.stem
    return top


@dataclass(frozen=True)
class Registration:
    """One row a worker writes: a handler it serves, of one application."""

    name: str
    app: str
    explicit: bool
    handler: str
    options: str  # JSON, keys sorted
    fingerprint: str
    regex: str | None

    def row(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "app": self.app,
            "explicit": self.explicit,
            "handler": self.handler,
            "options": json.loads(self.options),
            "fingerprint": self.fingerprint,
            "regex": self.regex,
        }


def registrations(definitions: Iterable[JobDefinition], app: str | None) -> list[Registration]:
    """The rows of these handlers, of application ``app`` (None: each its default)."""
    rows = []
    for d in definitions:
        handler = handler_id(d.func)
        options = json.dumps(d.options, sort_keys=True, default=str)
        digest = hashlib.sha256(f"{handler}\n{options}".encode()).hexdigest()[:16]
        rows.append(
            Registration(
                name=d.name,
                app=app if app is not None else default_app(d.func),
                explicit=app is not None,
                handler=handler,
                options=options,
                fingerprint=digest,
                regex=pattern_regex(d.name) if d.is_pattern else None,
            )
        )
    return rows


@dataclass(frozen=True)
class Conflict:
    """A handler of this worker and another application's that serve a common queue."""

    name: str  # this worker's queue (or pattern)
    app: str
    handler: str
    other_name: str  # the other's queue (or pattern)
    other_app: str
    other_handler: str
    other_worker: str  # host:pid:id of the worker that registered it last
    other_explicit: bool
    seen_at: datetime

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.name, self.other_name, self.other_app, self.other_handler)

    def describe(self) -> str:
        """One line saying what clashes and what to do about it."""
        where = self.name if self.name == self.other_name else f"{self.name} / {self.other_name}"
        host = self.other_worker.rpartition(":")[0].rpartition(":")[0] or self.other_worker
        return (
            f"queue {where}: handler {self.handler} of app {self.app!r} and handler "
            f"{self.other_handler} of app {self.other_app!r} (worker {self.other_worker} on "
            f"{host}, last seen {self.seen_at:%Y-%m-%d %H:%M:%S%z}) both serve it on this "
            "schema, so each app's workers take the other's jobs: give each app a schema "
            "of its own (schema=...), or rename one of the jobs"
        )


def conflict_message(conflicts: list[Conflict]) -> str:
    """The message of a HandlerConflictError."""
    shown = "; ".join(c.describe() for c in conflicts[:5])
    more = f" (and {len(conflicts) - 5} more)" if len(conflicts) > 5 else ""
    return f"handlers conflict with another app's: {shown}{more}"


def _overlap(mine: str, other: str) -> bool:
    """Whether a queue name or pattern and another serve a common queue (the database's
    regular expressions stand a [...] class for any character: this makes it exact)."""
    if mine == other:
        return True
    if is_pattern(mine) and not is_pattern(other):
        return fnmatchcase(other, mine)
    if is_pattern(other) and not is_pattern(mine):
        return fnmatchcase(mine, other)
    return False  # two different patterns: which queues both serve is not known here


def register_plan(
    sql: Statements, rows: list[Registration], worker: str, strict: bool, write: bool = True
) -> Plan[list[Conflict]]:
    """Plan (in one transaction): the conflicts of these rows with the registry, and write
    them unless ``strict`` and there are some (never unless ``write``: a check only)."""
    if write:
        yield Stmt(sql.handler_lock, {"lock_ms": REGISTRY_LOCK_TIMEOUT * 1000})
    params = {
        "handlers": json.dumps([r.row() for r in rows]),
        "worker": worker,
        "strict": strict,
        "write": write,
        "recent": REGISTRY_RECENT,
    }
    found = yield Stmt(sql.handler_register, params)
    conflicts = [
        Conflict(
            name=r["mine"],
            app=r["mine_app"],
            handler=r["mine_handler"],
            other_name=r["name"],
            other_app=r["app"],
            other_handler=r["handler"],
            other_worker=r["worker"],
            other_explicit=r["explicit_app"],
            seen_at=r["seen_at"],
        )
        for r in found
        if r["mine"] is not None and _overlap(r["mine"], r["name"])
    ]
    if write and strict and not conflicts and rows and not found[0]["written"]:
        # Only the database's rough cut of a pattern clashed: write after all.
        yield Stmt(sql.handler_register, {**params, "strict": False})
    return conflicts


@dataclass(frozen=True)
class HandlerInfo:
    """A row of the handler registry: the handler ``app``'s workers serve for queue (or
    pattern) ``name``, and when a worker last said so (``recent``: within the hour, so that
    it counts for conflicts).

    Example:
        ```python
        for info in pq.get_handlers():
            print(info.name, info.app, info.handler, info.seen_at)
        ```
    """

    name: str
    app: str
    handler: str
    options: dict[str, Any]
    fingerprint: str
    explicit_app: bool
    worker: str
    registered_at: datetime
    seen_at: datetime
    recent: bool


def list_plan(sql: Statements) -> Plan[list[HandlerInfo]]:
    """Plan: every registration, by name, the most recently seen first."""
    rows = yield Stmt(sql.handler_list, {"recent": REGISTRY_RECENT})
    return [HandlerInfo(**row) for row in rows]
