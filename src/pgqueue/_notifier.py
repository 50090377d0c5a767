"""One LISTEN connection per worker process, shared by all its queues."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

import psycopg

from ._async.runner import connect_options
from ._db import connect_error, refused
from .errors import PgQueueError

__all__ = ["PROBE_WAIT", "Notifier", "deaf_warning", "probe_payload"]

log = logging.getLogger("pgqueue.worker")

# Seconds a listener waits for its own probe notification before it warns that
# notifications do not reach it.
PROBE_WAIT = 5.0


def probe_payload() -> str:
    """A probe's payload: never a queue name, a job id or a cancellation (those start with a
    letter, digit or underscore), so other listeners ignore it."""
    return f"?probe {uuid.uuid4().hex}"


def deaf_warning(what: str) -> str:
    """The warning of a listener that LISTEN was accepted on but that hears nothing."""
    return (
        f"{what}: LISTEN was accepted but a test notification did not arrive within "
        f"{PROBE_WAIT:g}s (a pooler in transaction mode, such as PgBouncer, drops "
        f"notifications); polling instead. Set listen_dsn (--listen-dsn) to a direct "
        f"connection to PostgreSQL, or listen=False (--no-listen) to poll without listening"
    )


class Notifier:
    """Listens on channels and hands each notification to ``on_notify(channel, payload)``.

    When the connection drops it reconnects with backoff and calls ``on_connect()``, so the
    worker can look at the tables for whatever it missed meanwhile (NOTIFY is only a hint).
    Once listening, it notifies ``probe_channel`` through ``probe`` (another connection);
    if that notification does not come back within PROBE_WAIT seconds it warns once and
    calls ``on_deaf()``: the worker then polls for what notifications would have said.
    With ``dsn`` None it does nothing (the worker polls only).
    """

    def __init__(
        self,
        dsn: str | None,
        listen: list[str],
        on_notify: Callable[[str, str], None],
        on_connect: Callable[[], None],
        *,
        prepare: bool = True,
        probe_channel: str = "",
        probe: Callable[[str, str], Awaitable[None]] | None = None,
        on_deaf: Callable[[], None] = lambda: None,
    ) -> None:
        self._dsn = dsn
        self._listen = listen
        self._on_notify = on_notify
        self._on_connect = on_connect
        self._prepare = prepare
        self._probe_channel = probe_channel
        self._probe = probe
        self._on_deaf = on_deaf
        self._probed = False  # the check ran (once per notifier, not per reconnection)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._tried = asyncio.Event()  # the first connection attempt ended, either way
        self.connected = asyncio.Event()

    async def start(self) -> None:
        """Start listening; returns once the first LISTEN is in place (or failed once)."""
        if self._task is None and self._dsn is not None:
            self._task = asyncio.create_task(self._loop(self._dsn), name="pgqueue-notifier")
            waiter = asyncio.ensure_future(self._tried.wait())
            await asyncio.wait(
                {waiter, self._task}, timeout=10, return_when=asyncio.FIRST_COMPLETED
            )
            waiter.cancel()

    async def stop(self) -> None:
        """Stop listening. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True  # in case the cancellation comes back as a psycopg error
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.connected.clear()

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The listening task (the worker watches it)."""
        return self._task

    async def _loop(self, dsn: str) -> None:
        backoff = 0.1
        lost_at: float | None = None  # when the connection was lost, until it is back
        while not self._stopping:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    dsn,
                    keepalives=1,
                    keepalives_idle=10,
                    keepalives_interval=5,
                    keepalives_count=3,
                    **connect_options(dsn, self._prepare),
                )
                async with conn:
                    for statement in self._listen:
                        await conn.execute(statement)
                    self.connected.set()
                    self._tried.set()
                    backoff = 0.1
                    if lost_at is not None:
                        log.warning(
                            "notification connection back after %.1fs; looking for jobs "
                            "sent meanwhile",
                            time.monotonic() - lost_at,
                        )
                        lost_at = None
                    self._on_connect()
                    if not self._probed:
                        await self._check(conn)
                    async for note in conn.notifies():
                        self._on_notify(note.channel, note.payload)
            except psycopg.Error as exc:
                self.connected.clear()
                self._tried.set()
                if self._stopping:
                    return
                if lost_at is None:
                    lost_at = time.monotonic()
                log.warning(
                    "notification connection lost (%s); reconnecting in %.1fs",
                    connect_error(dsn, exc) if refused(exc) else exc,
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async def _check(self, conn: psycopg.AsyncConnection[object]) -> None:
        """Send the probe and hand on notifications until it comes back or PROBE_WAIT
        passes (then warn)."""
        self._probed = True
        if self._probe is None:
            return
        payload = probe_payload()
        try:
            await self._probe(self._probe_channel, payload)
        except PgQueueError as exc:  # cannot tell: assume it hears, as before the check
            log.debug("could not send the notification probe: %s", exc)
            return
        deadline = time.monotonic() + PROBE_WAIT
        while (left := deadline - time.monotonic()) > 0:
            heard = False
            # Never left mid-batch: the notifications that came with the probe would be lost.
            async for note in conn.notifies(timeout=left, stop_after=1):
                if note.channel == self._probe_channel and note.payload == payload:
                    heard = True
                else:
                    self._on_notify(note.channel, note.payload)
            if heard:
                return
        log.warning("%s", deaf_warning("the worker's notification listener"))
        self._on_deaf()
