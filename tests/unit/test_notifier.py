"""The Notifier against a real PostgreSQL: delivery, reconnection after a killed backend,
an unreachable server, and stop()."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import psycopg
import pytest

from pgqueue._notifier import PROBE_WAIT, Notifier

WAIT = 10.0  # deadline for anything that should happen promptly
UNREACHABLE = "postgresql://postgres@127.0.0.1:1/test"


def channel() -> str:
    return f"nt_{uuid.uuid4().hex}"


def listen(name: str) -> str:
    return f'LISTEN "{name}"'


class Recorder:
    """The notifier's callbacks, feeding queues a test can wait on."""

    def __init__(self) -> None:
        self.notes: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.connects: asyncio.Queue[None] = asyncio.Queue()

    def on_notify(self, channel: str, payload: str) -> None:
        self.notes.put_nowait((channel, payload))

    def on_connect(self) -> None:
        self.connects.put_nowait(None)

    async def next_notes(self, count: int) -> list[tuple[str, str]]:
        return [await asyncio.wait_for(self.notes.get(), WAIT) for _ in range(count)]


class LostConnections(logging.Handler):
    """Records, for each "connection lost" warning, whether ``connected`` was set then.

    The notifier logs the warning right after it clears ``connected`` and before it sleeps,
    so the state seen here is the state while disconnected, without racing the reconnection.
    """

    def __init__(self, notifier: Notifier) -> None:
        super().__init__(logging.WARNING)
        self.notifier = notifier
        self.seen: asyncio.Queue[bool] = asyncio.Queue()
        self.back: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "connection lost" in record.getMessage():
            self.seen.put_nowait(self.notifier.connected.is_set())
        else:  # the other warning: the connection is back
            self.back.append(record.getMessage())


@contextmanager
def lost_connections(notifier: Notifier) -> Iterator[LostConnections]:
    logger = logging.getLogger("pgqueue.worker")
    handler = LostConnections(notifier)
    level = logger.level
    logger.setLevel(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@asynccontextmanager
async def started(notifier: Notifier) -> AsyncIterator[Notifier]:
    await asyncio.wait_for(notifier.start(), WAIT)
    try:
        yield notifier
    finally:
        await asyncio.wait_for(notifier.stop(), WAIT)


@pytest.fixture
async def peer(dsn: str) -> AsyncIterator[psycopg.AsyncConnection[tuple[Any, ...]]]:
    """Another connection, to send notifications and look at the server."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        yield conn


async def notify(conn: psycopg.AsyncConnection[tuple[Any, ...]], name: str, payload: str) -> None:
    await conn.execute("SELECT pg_notify(%s, %s)", (name, payload))


async def listener_pid(conn: psycopg.AsyncConnection[tuple[Any, ...]], name: str) -> int:
    # pg_stat_activity.query is the backend's last statement: the notifier's LISTEN.
    cur = await conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE query = %s AND pid <> pg_backend_pid()",
        (listen(name),),
    )
    rows = await cur.fetchall()
    assert len(rows) == 1, rows
    pid: int = rows[0][0]
    return pid


async def test_notifications_reach_on_notify_in_order(
    dsn: str, peer: psycopg.AsyncConnection[tuple[Any, ...]]
) -> None:
    first, second, unheard = channel(), channel(), channel()
    recorder = Recorder()
    notifier = Notifier(
        dsn, [listen(first), listen(second)], recorder.on_notify, recorder.on_connect
    )
    sent = [(first, "1"), (second, "2"), (first, ""), (second, 'x "y" é'), (first, "5")]
    async with started(notifier):
        assert notifier.connected.is_set()
        # Sent first from the same session, so it would arrive first if it were delivered.
        await notify(peer, unheard, "not listened to")
        for name, payload in sent:
            await notify(peer, name, payload)
        assert await recorder.next_notes(len(sent)) == sent
    assert recorder.notes.empty()


async def test_reconnects_after_its_backend_is_killed(
    dsn: str, peer: psycopg.AsyncConnection[tuple[Any, ...]]
) -> None:
    name = channel()
    recorder = Recorder()
    notifier = Notifier(dsn, [listen(name)], recorder.on_notify, recorder.on_connect)
    with lost_connections(notifier) as lost:
        async with started(notifier):
            assert notifier.connected.is_set()
            # on_connect runs right after connected is set, before start() resumes.
            recorder.connects.get_nowait()
            assert recorder.connects.empty()
            await notify(peer, name, "before")
            assert await recorder.next_notes(1) == [(name, "before")]

            killed = await listener_pid(peer, name)
            await peer.execute("SELECT pg_terminate_backend(%s)", (killed,))

            assert await asyncio.wait_for(lost.seen.get(), WAIT) is False
            await asyncio.wait_for(recorder.connects.get(), WAIT)
            assert notifier.connected.is_set()
            assert recorder.connects.empty()
            assert await listener_pid(peer, name) != killed

            await notify(peer, name, "after")
            assert await recorder.next_notes(1) == [(name, "after")]
        assert lost.seen.empty()
        (back,) = lost.back
        assert back.startswith("notification connection back after")
    assert recorder.notes.empty()


async def test_start_against_an_unreachable_server_returns_unconnected() -> None:
    recorder = Recorder()
    notifier = Notifier(UNREACHABLE, [listen(channel())], recorder.on_notify, recorder.on_connect)
    # start() gives up waiting after its own 10 s at the latest.
    await asyncio.wait_for(notifier.start(), 3 * WAIT)
    task = notifier.task
    assert task is not None
    assert not notifier.connected.is_set()
    assert recorder.connects.empty()
    await asyncio.wait_for(notifier.stop(), WAIT)
    assert task.done()
    assert notifier.task is None
    assert not notifier.connected.is_set()


async def test_start_against_an_unreachable_server_returns_after_one_failure() -> None:
    recorder = Recorder()
    notifier = Notifier(UNREACHABLE, [listen(channel())], recorder.on_notify, recorder.on_connect)
    with lost_connections(notifier) as lost:
        try:
            await asyncio.wait_for(notifier.start(), 3 * WAIT)
            assert lost.seen.qsize() <= 1
        finally:
            await asyncio.wait_for(notifier.stop(), WAIT)


async def test_stop_is_idempotent_and_safe_before_start(dsn: str) -> None:
    recorder = Recorder()
    notifier = Notifier(dsn, [listen(channel())], recorder.on_notify, recorder.on_connect)
    await asyncio.wait_for(notifier.stop(), WAIT)
    await asyncio.wait_for(notifier.stop(), WAIT)
    assert notifier.task is None
    assert not notifier.connected.is_set()

    await asyncio.wait_for(notifier.start(), WAIT)
    task = notifier.task
    assert task is not None
    assert notifier.connected.is_set()
    await asyncio.wait_for(notifier.stop(), WAIT)
    assert task.done()
    assert task.cancelled() or task.exception() is None
    assert notifier.task is None
    await asyncio.wait_for(notifier.stop(), WAIT)
    assert notifier.task is None


async def test_a_probe_that_comes_back_is_not_handed_on_and_raises_no_warning(
    dsn: str, peer: psycopg.AsyncConnection[tuple[Any, ...]], caplog: pytest.LogCaptureFixture
) -> None:
    name = channel()
    recorder = Recorder()
    deaf: list[bool] = []
    notifier = Notifier(
        dsn,
        [listen(name)],
        recorder.on_notify,
        recorder.on_connect,
        probe_channel=name,
        probe=lambda channel, payload: notify(peer, channel, payload),
        on_deaf=lambda: deaf.append(True),
    )
    async with started(notifier):
        await asyncio.wait_for(recorder.connects.get(), WAIT)
        # Sent after the probe by the same session: it arrives after the probe came back.
        await notify(peer, name, "after")
        assert await recorder.next_notes(1) == [(name, "after")]
    assert deaf == []
    assert not [r for r in caplog.records if "listen_dsn" in r.getMessage()]


async def test_a_probe_that_never_comes_back_warns_once_and_notes_still_arrive(
    dsn: str, peer: psycopg.AsyncConnection[tuple[Any, ...]], caplog: pytest.LogCaptureFixture
) -> None:
    name, elsewhere = channel(), channel()
    recorder = Recorder()
    deaf = asyncio.Event()
    notifier = Notifier(
        dsn,
        [listen(name)],
        recorder.on_notify,
        recorder.on_connect,
        probe_channel=elsewhere,  # what a pooler that drops notifications looks like
        probe=lambda channel, payload: notify(peer, channel, payload),
        on_deaf=deaf.set,
    )
    caplog.set_level(logging.WARNING, logger="pgqueue.worker")
    async with started(notifier):
        await notify(peer, name, "during the check")
        assert await recorder.next_notes(1) == [(name, "during the check")]
        await asyncio.wait_for(deaf.wait(), PROBE_WAIT + WAIT)
        await notify(peer, name, "after")
        assert await recorder.next_notes(1) == [(name, "after")]
    warnings = [r.getMessage() for r in caplog.records if "listen_dsn" in r.getMessage()]
    assert len(warnings) == 1 and "listen=False" in warnings[0]


async def test_without_a_dsn_it_does_not_listen() -> None:
    recorder = Recorder()
    notifier = Notifier(None, [listen(channel())], recorder.on_notify, recorder.on_connect)
    async with started(notifier):
        assert notifier.task is None and not notifier.connected.is_set()
    assert recorder.connects.empty()
