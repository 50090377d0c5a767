"""The worker's health endpoint: ``GET /healthz`` and ``GET /readyz`` on ``health_port``."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import pgqueue
from pgqueue import AsyncPgQueue
from tests.conftest import child_environ


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def probe(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, Any]]:
    """One request: its status and JSON body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    return status, json.loads(body)


async def until(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def answers(port: int, path: str, status: int) -> bool:
    try:
        got, _ = await probe(port, path)
    except OSError:
        return False
    return got == status


class Proxy:
    """A TCP proxy in front of PostgreSQL that can be cut (every connection closed, new ones
    refused) and brought back on the same port: the database out of reach, for real."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)  # a host, or a Unix socket's directory
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        await self._server.wait_closed()
        self._server = None

    async def close(self) -> None:
        if self._server is not None:
            await self.cut()
        for pipe in self._pipes:
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            host, port = self.target
            if host.startswith("/"):
                up_reader, up_writer = await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
            else:
                up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            pipe = asyncio.create_task(self._pipe(source, sink))
            self._pipes.add(pipe)
            pipe.add_done_callback(self._pipes.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except OSError:
            pass
        finally:
            sink.transport.abort()
            self._writers.discard(sink)


@pytest.fixture
async def proxy(dsn: str) -> AsyncIterator[Proxy]:
    params = conninfo_to_dict(dsn)
    host = str(params.get("host") or "127.0.0.1")
    running = Proxy(host, int(params.get("port") or 5432))
    await running.start()
    yield running
    await running.close()


async def test_a_healthy_worker_answers_200_on_both(apq: AsyncPgQueue) -> None:
    @apq.job("noop")
    async def noop(data: None) -> None:
        pass

    port = free_port()
    working = asyncio.create_task(
        apq.work(health_port=port, health_host="127.0.0.1", poll_interval=0.1)
    )
    try:
        await until(lambda: answers(port, "/readyz", 200), 20, "the worker to be ready")
        status, body = await probe(port, "/healthz")
        assert status == 200
        assert body["status"] == "ok" and "problems" not in body
        assert body["last_database_contact_seconds_ago"] < 5
        assert (await probe(port, "/readyz"))[1]["status"] == "ready"
        assert (await probe(port, "/healthz?verbose=1"))[0] == 200  # a query string is fine
        assert (await probe(port, "/metrics"))[0] == 404
        assert (await probe(port, "/healthz", "POST"))[0] == 405
        # Not HTTP at all: a 400, and the endpoint goes on answering.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello\r\n\r\n")
        assert (await reader.read()).startswith(b"HTTP/1.1 400 ")
        writer.close()
        # A client that connects and says nothing holds up neither the others nor the stop
        # (it would be dropped after 5 s: the stop takes less).
        silent_reader, silent = await asyncio.open_connection("127.0.0.1", port)
        assert (await probe(port, "/healthz"))[0] == 200
    finally:
        apq.stop_working()
        await asyncio.wait_for(working, 4)
    assert await asyncio.wait_for(silent_reader.read(), 1) == b""  # dropped, unanswered
    silent.close()
    with pytest.raises(ConnectionRefusedError):  # the endpoint ends with the worker
        await probe(port, "/healthz")


async def test_silent_clients_cannot_pile_up(apq: AsyncPgQueue) -> None:
    """Clients that connect and say nothing are capped (the oldest dropped for a newcomer):
    a flood of them cannot take the worker's file descriptors, and a probe is answered."""
    from pgqueue._health import _MAX_PROBES

    @apq.job("noop")
    async def noop(data: None) -> None:
        pass

    port = free_port()
    working = asyncio.create_task(
        apq.work(health_port=port, health_host="127.0.0.1", poll_interval=0.1)
    )
    silent: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        await until(lambda: answers(port, "/readyz", 200), 20, "the worker to be ready")
        for _ in range(_MAX_PROBES + 10):
            silent.append(await asyncio.open_connection("127.0.0.1", port))
        # The ten oldest are closed at once, well before the 5 s read timeout.
        for reader, _ in silent[:10]:
            assert await asyncio.wait_for(reader.read(), 2) == b""
        assert (await probe(port, "/healthz"))[0] == 200
        still = 0
        for reader, _ in silent[10:]:
            try:
                await asyncio.wait_for(reader.read(1), 0.01)
            except asyncio.TimeoutError:
                still += 1
            except OSError:  # (reset: dropped too)
                pass
        assert still == _MAX_PROBES - 1  # the newest but one, the probe having dropped one
    finally:
        for _, writer in silent:
            writer.close()
        apq.stop_working()
        await asyncio.wait_for(working, 4)


async def test_healthz_answers_503_while_the_database_is_out_of_reach(
    proxy: Proxy, dsn: str, schema: str
) -> None:
    through = make_conninfo(dsn, host="127.0.0.1", port=str(proxy.port))
    async with AsyncPgQueue(through, schema=schema, maintenance=False) as pq:

        @pq.job("noop")
        async def noop(data: None) -> None:
            pass

        port = free_port()
        working = asyncio.create_task(
            pq.work(
                health_port=port, health_host="127.0.0.1", poll_interval=0.1, health_timeout=1.0
            )
        )
        try:
            await until(lambda: answers(port, "/readyz", 200), 20, "a started worker")
            assert (await probe(port, "/healthz"))[0] == 200
            await proxy.cut()
            await until(lambda: answers(port, "/healthz", 503), 20, "healthz to fail")
            status, body = await probe(port, "/healthz")
            assert status == 503 and body["status"] == "unhealthy"
            assert any("no statement succeeded for 1s" in p for p in body["problems"])
            assert (await probe(port, "/readyz"))[0] == 200  # alive or not, it still tries
            await proxy.start()
            await until(lambda: answers(port, "/healthz", 200), 60, "healthz to recover")
            # It works again, too.
            handle = await noop.send()
            assert handle is not None
            await handle.result(timeout=30)
        finally:
            pq.stop_working()
            await working


async def test_readyz_answers_503_while_a_graceful_stop_drains(apq: AsyncPgQueue) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    @apq.job("hold")
    async def hold(data: None) -> None:
        started.set()
        await release.wait()

    port = free_port()
    working = asyncio.create_task(
        apq.work(health_port=port, health_host="127.0.0.1", poll_interval=0.1)
    )
    try:
        await hold.send()
        await asyncio.wait_for(started.wait(), 20)
        assert (await probe(port, "/readyz"))[0] == 200
        apq.stop_working()  # what SIGTERM does: the running job may finish
        await until(lambda: answers(port, "/readyz", 503), 20, "readyz to say stopping")
        assert (await probe(port, "/readyz"))[1]["status"] == "stopping"
        assert (await probe(port, "/healthz"))[0] == 200  # draining is not dying
        assert not working.done()
    finally:
        release.set()
        await working


async def test_bad_health_ports_are_refused_before_any_work(apq: AsyncPgQueue) -> None:
    @apq.job("noop")
    async def noop(data: None) -> None:
        pass

    for bad in (-1, 65536, 3.5, True, "8080"):
        with pytest.raises(pgqueue.InvalidOptionError, match="health_port is a port from 0"):
            await apq.work(health_port=bad)  # type: ignore[arg-type]
    with pytest.raises(pgqueue.InvalidOptionError, match="health_host"):
        await apq.work(health_port=0, health_host="")
    with pytest.raises(pgqueue.InvalidOptionError, match="health_timeout"):
        await apq.work(health_port=0, health_timeout=-1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        in_use = taken.getsockname()[1]
        with pytest.raises(pgqueue.WorkerError, match=rf"cannot serve health checks on .*{in_use}"):
            await apq.work(health_port=in_use, health_host="127.0.0.1")
        # The metrics' port is taken by the metrics: a clear error too, not a half-served worker.
        shared = free_port()
        with pytest.raises(pgqueue.WorkerError, match=rf"cannot serve health checks on .*{shared}"):
            await apq.work(
                metrics_port=shared,
                metrics_host="127.0.0.1",
                health_port=shared,
                health_host="127.0.0.1",
            )
    assert not apq.working
    with socket.socket() as again:  # and the metrics server was closed with it
        again.bind(("127.0.0.1", shared))
    # Nothing was claimed: a job sent now waits, and a worker can still start.
    handle = await noop.send()
    assert handle is not None
    await apq.work(until_empty=True, health_port=0, health_host="127.0.0.1")
    await handle.result(timeout=10)


def test_the_blocking_twin_serves_them_too(pq: pgqueue.PgQueue) -> None:
    import threading
    import urllib.error
    import urllib.request

    @pq.job("noop")
    def noop(data: None) -> None:
        pass

    port = free_port()
    thread = threading.Thread(
        target=pq.work, kwargs={"health_port": port, "health_host": "127.0.0.1"}
    )
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
                    assert r.status == 200
                    break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    pytest.fail("the blocking worker's endpoint never answered")
                time.sleep(0.05)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert json.load(r)["status"] == "ok"
    finally:
        pq.stop_working()
        thread.join(60)
    assert not thread.is_alive()


@pytest.mark.slow
def test_a_pgqueue_worker_process_serves_them(dsn: str, schema: str, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **child_environ(),
        "PGQUEUE_TEST_DSN": dsn,
        "PGQUEUE_TEST_SCHEMA": schema,
        "PGQUEUE_TEST_OUT": str(tmp_path),
    }
    argv = [sys.executable, "-m", "pgqueue.cli", "worker", "tests.acceptance.app:pq"]
    bad = subprocess.run(
        [*argv, "--health-port", "70000"], env=env, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 1
    assert "pgqueue: error: --health-port is a port from 0 to 65535, got 70000" in bad.stderr
    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen(
            [*argv, "--health-port", str(port), "--health-host", "127.0.0.1"],
            env=env,
            stderr=log,
        )
    try:

        async def check() -> None:
            await until(lambda: answers(port, "/readyz", 200), 60, "the worker's /readyz")
            assert (await probe(port, "/healthz"))[0] == 200

        asyncio.run(check())
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(30)
    assert "serving health checks on http://127.0.0.1:" in (tmp_path / "worker.log").read_text()
