"""What runs plans and background ticks: the one way every component reaches the database."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import AsyncConnectionPool, AsyncNullConnectionPool

from .._compat import ABackground, AEvent, aend, aspawn, await_event
from .._config import session_options
from .._db import Plan, connect_error, foreign_json, has_rows, load_json, translate
from ..errors import InvalidOptionError

__all__ = ["AsyncConn", "AsyncPeriodic", "AsyncRunner", "connect_options", "run_async"]

log = logging.getLogger("pgqueue")
T = TypeVar("T")
# The caller's own connection, which an operation given ``conn=`` runs on.
AsyncConn = psycopg.AsyncConnection[Any]


def connect_options(dsn: str, prepare: bool) -> dict[str, Any]:
    """The options of every connection pgqueue opens to ``dsn``: autocommit, its
    application_name (see ``session_options``), and without ``prepare`` no prepared
    statements (a pooler in transaction mode hands each transaction to any server
    connection, where a statement prepared on another one does not exist)."""
    options: dict[str, Any] = {"autocommit": True, **session_options(dsn)}
    if not prepare:
        options["prepare_threshold"] = None
    return options


async def run_async(conn: psycopg.AsyncConnection[Any], plan: Plan[T]) -> T:
    """Drive ``plan`` on ``conn`` (inside whatever transaction it has). On a connection
    whose ``prepare_threshold`` is None nothing is prepared, not even statements that ask."""
    prepares = conn.prepare_threshold is not None
    # A caller's connection may load JSON its own way (Django's: as text); pgqueue's plans
    # read it as psycopg does by default.
    foreign = foreign_json(conn.adapters)
    try:
        stmt = next(plan)
        while True:
            try:
                async with conn.cursor(row_factory=tuple_row if stmt.tuples else dict_row) as cur:
                    if foreign:
                        load_json(cur.adapters)
                    await cur.execute(
                        stmt.query, stmt.params, prepare=stmt.prepare if prepares else False
                    )
                    rows = await cur.fetchall() if has_rows(cur) else []
            except psycopg.Error as exc:
                stmt = plan.throw(exc)
            else:
                stmt = plan.send(rows)
    except StopIteration as stop:
        result: T = stop.value
        return result
    except psycopg.Error as exc:
        raise translate(exc) from exc


class AsyncRunner:
    """Runs plans on the caller's connection, or on a connection of its pool: what the
    queue object, its worker and its background ticks are given to reach the database."""

    def __init__(
        self,
        dsn: str,
        *,
        name: str,
        min_size: int,
        max_size: int,
        connect_timeout: float,
        null: bool = False,
        pool: AsyncConnectionPool[Any] | None = None,
        prepare: bool = True,
    ) -> None:
        self.dsn = dsn
        self.prepare = prepare
        self._connect_timeout = connect_timeout
        # The caller's pool is the caller's to open and close; a null pool connects for
        # each use (what a PgBouncer in front of the server wants: it keeps the pool).
        self._owned = pool is None
        if pool is None:
            kind = AsyncNullConnectionPool if null else AsyncConnectionPool
            pool = kind(
                dsn,
                min_size=0 if null else min_size,
                max_size=max_size,
                open=False,
                name=name,
                kwargs=connect_options(dsn, prepare),
            )
        self._pool: AsyncConnectionPool[Any] = pool

    def check(self) -> None:
        """Raise InvalidOptionError if the caller's pool is not open (before anything is
        written)."""
        if not self._owned and self._pool.closed:
            raise InvalidOptionError(
                f"the pool given as pool= ({self._pool.name}) is not open: open it "
                "before starting pgqueue (pgqueue neither opens nor closes it)"
            )

    async def open(self) -> None:
        """Open the pool, waiting (up to the connect timeout) for its first connections
        (the caller's pool must be open already)."""
        self.check()
        if not self._owned:
            return
        try:
            await self._pool.open(wait=True, timeout=self._connect_timeout)
        except psycopg.OperationalError as exc:  # the pool's timeout hides why: ask
            await self._pool.close()
            # As many connections at once as the pool wanted: a server that allows fewer
            # (max_connections, a role's limit) refuses one of them and says so.
            probes: list[psycopg.AsyncConnection[Any]] = []
            try:
                for _ in range(max(1, self._pool.min_size)):
                    probes.append(
                        await psycopg.AsyncConnection.connect(
                            self.dsn, connect_timeout=2, **connect_options(self.dsn, self.prepare)
                        )
                    )
            except psycopg.Error as cause:
                raise connect_error(self.dsn, cause) from exc
            finally:
                for probe in probes:
                    await probe.close()
            raise connect_error(self.dsn, exc) from exc

    async def close(self, timeout: float = 30.0) -> None:
        """Close the pool (not the caller's)."""
        if self._owned:
            await self._pool.close(timeout=timeout)

    async def run(
        self,
        plan: Plan[T],
        conn: psycopg.AsyncConnection[Any] | None = None,
        atomic: bool = True,
    ) -> T:
        """Run ``plan`` on ``conn``, else on a pooled connection: in one transaction when
        ``atomic`` (plans of one statement pass False and save two round trips)."""
        if conn is not None:
            return await run_async(conn, plan)
        try:
            async with self._pool.connection() as pooled:
                if not atomic and pooled.autocommit:  # (a caller's pool may not be)
                    return await run_async(pooled, plan)
                async with pooled.transaction():
                    return await run_async(pooled, plan)
        except psycopg.OperationalError as exc:
            raise connect_error(self.dsn, exc) from exc


class AsyncPeriodic:
    """Calls ``tick()`` every ``interval`` seconds in the background until stopped (an
    instance's maintenance, cron and monitors); errors are logged and kept in
    ``last_error``."""

    def __init__(self, name: str, interval: float, tick: Callable[[], Awaitable[object]]) -> None:
        self._name = name
        self._interval = interval
        self._tick = tick
        self._stopping = AEvent()
        self._background: ABackground | None = None
        self.last_error: BaseException | None = None

    async def start(self) -> None:
        """Start ticking. Idempotent."""
        if self._background is None:
            self._stopping.clear()
            self._background = aspawn(self._loop, self._name)

    async def stop(self) -> None:
        """Stop ticking (after the tick under way). Idempotent, safe before start."""
        background, self._background = self._background, None
        if background is not None:
            # The event ends the loop even when a library turns the cancellation of a query
            # into an ordinary error, which the loop would otherwise log and carry on after.
            self._stopping.set()
            await aend(background)

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._tick()
                self.last_error = None
            except Exception as exc:  # a lost connection: log it and try at the next tick
                if self._stopping.is_set():
                    return
                self.last_error = exc
                # (some errors, a TimeoutError for one, say nothing: their type does)
                log.warning("%s failed: %s", self._name, str(exc) or type(exc).__name__)
            await await_event(self._stopping, self._interval)
