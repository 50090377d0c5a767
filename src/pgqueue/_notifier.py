"""One LISTEN connection per worker process, shared by all its queues."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import psycopg

__all__ = ["Notifier"]

log = logging.getLogger("pgqueue.worker")


class Notifier:
    """Listens on channels and hands each notification to ``on_notify(channel, payload)``.

    When the connection drops it reconnects with backoff and calls ``on_connect()``, so the
    worker can look at the tables for whatever it missed meanwhile (NOTIFY is only a hint).
    """

    def __init__(
        self,
        dsn: str,
        listen: list[str],
        on_notify: Callable[[str, str], None],
        on_connect: Callable[[], None],
    ) -> None:
        self._dsn = dsn
        self._listen = listen
        self._on_notify = on_notify
        self._on_connect = on_connect
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._tried = asyncio.Event()  # the first connection attempt ended, either way
        self.connected = asyncio.Event()

    async def start(self) -> None:
        """Start listening; returns once the first LISTEN is in place (or failed once)."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="pgqueue-notifier")
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

    async def _loop(self) -> None:
        backoff = 0.1
        lost_at: float | None = None  # when the connection was lost, until it is back
        while not self._stopping:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._dsn,
                    autocommit=True,
                    keepalives=1,
                    keepalives_idle=10,
                    keepalives_interval=5,
                    keepalives_count=3,
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
                    "notification connection lost (%s); reconnecting in %.1fs", exc, backoff
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
