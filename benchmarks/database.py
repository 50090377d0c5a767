"""Fresh databases on the benchmark server, one per library run, dropped afterwards."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from .settings import ADMIN_DSN

_counter = itertools.count(1)


def database_dsn(name: str) -> str:
    """The URL of database ``name`` on the benchmark server (asyncpg takes URLs only)."""
    return urlunsplit(urlsplit(ADMIN_DSN)._replace(path="/" + name))


def database_name(dsn: str) -> str:
    """The database a DSN made by :func:`database_dsn` points at."""
    return urlsplit(dsn).path.lstrip("/")


@asynccontextmanager
async def fresh_database(label: str, template: str | None = None) -> AsyncIterator[str]:
    """Create ``bench_<label>_<n>`` (empty, or a file copy of database ``template``), yield
    its DSN, drop it (forcing out stray sessions)."""
    name = f"bench_{label}_{os.getpid()}_{next(_counter)}"
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        create = sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
            sql.Identifier(name), sql.Identifier(template)
        )
    async with await psycopg.AsyncConnection.connect(ADMIN_DSN, autocommit=True) as admin:
        await admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        await admin.execute(create)
    try:
        yield database_dsn(name)
    finally:
        async with await psycopg.AsyncConnection.connect(ADMIN_DSN, autocommit=True) as admin:
            await admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


async def scalar(dsn: str, query: str) -> int:
    """Run a query returning one integer on a short-lived connection."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(query.encode())
        row = await cur.fetchone()
        return int(row[0]) if row and row[0] is not None else 0


async def vacuum_analyze(dsn: str) -> None:
    """VACUUM ANALYZE the whole database, so every run starts from clean, known statistics."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("VACUUM ANALYZE")


async def server_version() -> str:
    """The server's version string (short form)."""
    async with await psycopg.AsyncConnection.connect(ADMIN_DSN, autocommit=True) as conn:
        cur = await conn.execute("SHOW server_version")
        row = await cur.fetchone()
        return str(row[0]) if row else "?"


SERVER_SETTINGS = (
    "server_version",
    "autovacuum",
    "synchronous_commit",
    "fsync",
    "full_page_writes",
    "shared_buffers",
)


async def server_settings() -> dict[str, str]:
    """The server settings a run's figures depend on most, as ``SHOW`` prints them."""
    async with await psycopg.AsyncConnection.connect(ADMIN_DSN, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT name, current_setting(name) FROM unnest(%s::text[]) AS name",
            (list(SERVER_SETTINGS),),
        )
        return {str(name): str(value) for name, value in await cur.fetchall()}
