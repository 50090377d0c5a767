"""Prometheus metrics: a worker serving them over HTTP while it drains jobs that complete,
fail, retry, snooze and expire; the counters and histograms agree with the runs, the depth
gauges with the database; with metrics off nothing is kept or served."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import prometheus_client
import psycopg
import psycopg.sql
import pytest
from prometheus_client.parser import text_string_to_metric_families

import pgqueue
import pgqueue.metrics
from pgqueue import AsyncPgQueue, JobState, RunningJob

ROOT = Path(__file__).resolve().parents[2]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def parse(text: str) -> Samples:
    """Every sample of a scrape, by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(port: int) -> Samples:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert response.status_code == 200
    return parse(response.text)


async def until(predicate: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)


async def test_a_worker_serves_counters_that_match_its_runs(dsn: str, schema: str) -> None:
    async with AsyncPgQueue(dsn, schema=schema, maintenance=False) as pq:
        release = asyncio.Event()

        @pq.job("hold")
        async def hold(data: None) -> None:
            await release.wait()

        @pq.job("work", retry_limit=1, retry_delay=0)
        async def work(data: int, job: RunningJob) -> int:
            kind = data % 5
            if kind == 0:  # fails every time: one retry, then failed
                raise ValueError("always")
            if kind == 1 and job.attempt == 1:  # fails once, then completes
                raise ValueError("once")
            if kind == 2 and job.attempt == 1:  # snoozes once, then completes
                job.snooze(0)
            return data

        metrics = pgqueue.metrics.enable(pq, stats_every=0)
        assert pgqueue.metrics.enable(pq) is metrics  # once per queue object
        port = free_port()
        working = asyncio.create_task(
            pq.work(metrics_port=port, metrics_host="127.0.0.1", local_concurrency=10)
        )
        try:
            # During: three runs hold their slots.
            await pq.insert([{"name": "hold"}] * 3)

            async def holding() -> bool:
                got = await scrape(port)
                return value(got, "pgqueue_worker_busy_slots") == 3

            await until(holding)
            during = await scrape(port)
            assert value(during, "pgqueue_workers") == 1
            assert value(during, "pgqueue_worker_slots") == 10
            assert value(during, "pgqueue_queue_jobs", queue="hold", state="active") == 3
            assert value(during, "pgqueue_jobs_started_total", queue="hold") == 3
            release.set()

            # The drain: 60 jobs, a fifth of each kind.
            ids = await pq.insert([{"name": "work", "data": i} for i in range(60)])
            assert all(ids)

            async def drained() -> bool:
                stats = (await pq.get_queue_stats("work"))[0]
                return stats.waiting == stats.active == 0

            await until(drained)

            async def all_counted() -> bool:
                got = await scrape(port)
                ended = sum(
                    value(got, f"pgqueue_jobs_{kind}_total", queue="work")
                    for kind in ("completed", "failed", "retried", "snoozed")
                )
                return ended == 96

            await until(all_counted)
            after = await scrape(port)
        finally:
            pq.stop_working()
            await working
    assert value(after, "pgqueue_jobs_sent_total", queue="work") == 60
    assert value(after, "pgqueue_jobs_sent_total", queue="hold") == 3
    # 12 of each kind: fail always (2 runs), fail once (2), snooze once (2), complete (1) x 24
    assert value(after, "pgqueue_jobs_started_total", queue="work") == 96
    assert value(after, "pgqueue_jobs_completed_total", queue="work") == 48
    assert value(after, "pgqueue_jobs_retried_total", queue="work") == 24
    assert value(after, "pgqueue_jobs_failed_total", queue="work") == 12
    assert value(after, "pgqueue_jobs_snoozed_total", queue="work") == 12
    assert value(after, "pgqueue_jobs_expired_total", queue="work") == 0
    assert value(after, "pgqueue_job_run_seconds_count", queue="work") == 96
    assert value(after, "pgqueue_job_wait_seconds_count", queue="work") == 96
    assert value(after, "pgqueue_job_run_seconds_sum", queue="work") > 0
    assert value(after, "pgqueue_jobs_completed_total", queue="hold") == 3
    # The depth gauges are the database's counts.
    assert value(after, "pgqueue_queue_jobs", queue="work", state="completed") == 48
    assert value(after, "pgqueue_queue_jobs", queue="work", state="failed") == 12
    assert value(after, "pgqueue_queue_jobs", queue="work", state="created") == 0
    assert value(after, "pgqueue_queue_oldest_waiting_seconds", queue="work") == 0
    assert value(after, "pgqueue_worker_busy_slots") == 0
    # The server stopped with the worker.
    with pytest.raises(httpx.TransportError):
        await scrape(port)
    assert value(parse(pgqueue.metrics.render(pq)[0].decode()), "pgqueue_workers") == 0
    metrics.close()


async def test_an_expired_run_counts_as_expired_and_failed(apq: AsyncPgQueue) -> None:
    @apq.job("slow", retry_limit=0, expire_in=0.05)
    async def slow(data: None) -> None:
        await asyncio.Event().wait()  # until the expiry cancels it

    metrics = pgqueue.metrics.enable(apq)
    await apq.send("slow")
    await apq.work(until_empty=True)
    samples = parse(metrics.render()[0].decode())
    assert value(samples, "pgqueue_jobs_expired_total", queue="slow") == 1
    assert value(samples, "pgqueue_jobs_failed_total", queue="slow") == 1
    assert value(samples, "pgqueue_jobs_retried_total", queue="slow") == 0
    metrics.close()


async def test_depth_is_read_at_most_once_per_interval(apq: AsyncPgQueue) -> None:
    await apq.create_queue("q")
    metrics = pgqueue.metrics.enable(apq, stats_every=3600)
    await apq.send("q")
    first = parse(metrics.render()[0].decode())
    await apq.send("q")
    again = parse(metrics.render()[0].decode())
    assert value(first, "pgqueue_queue_jobs", queue="q", state="created") == 1
    assert value(again, "pgqueue_queue_jobs", queue="q", state="created") == 1  # cached
    assert value(again, "pgqueue_jobs_sent_total", queue="q") == 2  # kept in process
    body, content_type = pgqueue.metrics.render(apq, "application/openmetrics-text")
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")
    metrics.close()


async def test_the_asgi_app_serves_the_metrics(apq: AsyncPgQueue) -> None:
    await apq.create_queue("q")
    await apq.send("q")  # before metrics: not counted
    app = pgqueue.metrics.asgi_app(apq)
    await apq.send("q")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = parse(response.text)
    assert value(samples, "pgqueue_jobs_sent_total", queue="q") == 1
    assert value(samples, "pgqueue_queue_jobs", queue="q", state="created") == 2
    pgqueue.metrics.enable(apq).close()


def test_registries_are_per_queue_object_unless_given(dsn: str, schema: str) -> None:
    registry = prometheus_client.CollectorRegistry()
    with (
        pgqueue.PgQueue(dsn, schema=schema, maintenance=False) as one,
        pgqueue.PgQueue(dsn, schema=schema, maintenance=False) as two,
    ):
        first = pgqueue.metrics.enable(one)
        second = pgqueue.metrics.enable(two, registry)
        assert first.registry is not second.registry and second.registry is registry
        one.create_queue("q")
        one.send("q")
        assert registry.get_sample_value("pgqueue_jobs_sent_total", {"queue": "q"}) is None
        assert first.registry.get_sample_value("pgqueue_jobs_sent_total", {"queue": "q"}) == 1
        first.close()
        second.close()


async def test_metrics_off_keep_and_serve_nothing(apq: AsyncPgQueue) -> None:
    @apq.job("q")
    async def q(data: None) -> None:
        pass

    await apq.send("q")
    await apq.work(until_empty=True)
    assert apq._observer is None and not apq._observing
    names = {m.name for m in prometheus_client.REGISTRY.collect()}
    assert not any(name.startswith("pgqueue") for name in names)


def test_pgqueue_imports_without_the_optional_packages() -> None:
    code = (
        "import sys\n"
        "sys.modules['prometheus_client'] = None\n"
        "sys.modules['opentelemetry'] = None\n"
        "import pgqueue\n"
        "pgqueue.PgQueue('postgresql://nowhere/none')\n"
        "assert 'pgqueue.metrics' not in sys.modules and 'pgqueue.tracing' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_the_worker_command_serves_metrics(dsn: str, schema: str) -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as out, pgqueue.PgQueue(dsn, schema=schema) as pq:
        env: dict[str, Any] = {
            **os.environ,
            "PGQUEUE_TEST_DSN": dsn,
            "PGQUEUE_TEST_SCHEMA": schema,
            "PGQUEUE_TEST_OUT": out,
        }
        argv = ["--queues", "count", "--metrics-port", str(port), "--metrics-host", "127.0.0.1"]
        with open(Path(out) / "stderr.txt", "wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pgqueue.cli", "worker", "tests.acceptance.app:pq", *argv],
                cwd=ROOT,
                env=env,
                stderr=stderr,
            )
        try:
            pq.create_queue("count")
            pq.insert([{"name": "count", "data": i} for i in range(50)])
            deadline = time.monotonic() + 60
            samples: Samples = {}
            while value(samples, "pgqueue_jobs_completed_total", queue="count") < 50:
                assert time.monotonic() < deadline, (Path(out) / "stderr.txt").read_text()
                assert proc.poll() is None, (Path(out) / "stderr.txt").read_text()
                with contextlib.suppress(httpx.TransportError):  # not listening yet
                    samples = parse(httpx.get(f"http://127.0.0.1:{port}/metrics").text)
                time.sleep(0.05)
            assert value(samples, "pgqueue_jobs_started_total", queue="count") == 50
            assert value(samples, "pgqueue_job_run_seconds_count", queue="count") == 50
            assert value(samples, "pgqueue_workers") == 1
            stats = pq.get_queue_stats("count")[0]
            assert stats.counts[JobState.completed] == 50
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0


def test_a_blocking_worker_serves_metrics_while_it_works(pq: pgqueue.PgQueue) -> None:
    @pq.job("q")
    def q(data: int) -> int:
        return data

    scraped: list[Samples] = []

    @pq.job("scrape")
    def scrape_now(data: int) -> None:  # runs inside the worker, so the server is up
        scraped.append(parse(httpx.get(f"http://127.0.0.1:{data}/metrics").text))

    port = free_port()
    ids = pq.insert([{"name": "q", "data": i} for i in range(5)])
    pq.send("scrape", port, depends_on=[i for i in ids if i is not None])
    pq.work(until_empty=True, metrics_port=port, metrics_host="127.0.0.1", local_concurrency=1)
    (during,) = scraped
    assert value(during, "pgqueue_jobs_sent_total", queue="q") == 0  # sent before metrics
    assert value(during, "pgqueue_jobs_completed_total", queue="q") == 5  # ran before it
    assert value(during, "pgqueue_workers") == 1
    assert value(during, "pgqueue_worker_busy_slots") == 1  # the scrape's own run
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/metrics")
    pgqueue.metrics.enable(pq).close()


async def test_a_scrape_waiting_on_the_database_holds_neither_the_loop_nor_other_scrapes(
    apq: AsyncPgQueue, dsn: str, schema: str
) -> None:
    # The depth is read on a thread: while the job table is locked, the app's event loop
    # serves other requests, and concurrent scrapes share the one reading under way.
    await apq.create_queue("q")
    app = pgqueue.metrics.asgi_app(apq)
    metrics = pgqueue.metrics.enable(apq)
    transport = httpx.ASGITransport(app=app)
    with psycopg.connect(dsn) as locker:
        locker.execute(
            psycopg.sql.SQL("LOCK TABLE {}.job IN ACCESS EXCLUSIVE MODE").format(
                psycopg.sql.Identifier(schema)
            )
        )
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            scrapes = [asyncio.create_task(client.get("/metrics")) for _ in range(5)]
            began = time.monotonic()
            await asyncio.sleep(0)  # the loop goes on meanwhile
            assert not any(s.done() for s in scrapes) and time.monotonic() - began < 1
            with psycopg.connect(dsn, autocommit=True) as watcher:

                async def waiting_readers() -> int:
                    row = watcher.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name ="
                        " 'pgqueue-metrics' AND wait_event_type = 'Lock'"
                    ).fetchone()
                    return 0 if row is None else int(row[0])

                await until(lambda: _positive(waiting_readers()))
                readers = await waiting_readers()
            locker.rollback()
            responses = await asyncio.gather(*scrapes)
    assert readers == 1
    assert all(r.status_code == 200 for r in responses)
    metrics.close()


def test_a_metrics_port_that_cannot_be_served_is_a_clear_error(apq: AsyncPgQueue) -> None:
    metrics = pgqueue.metrics.enable(apq)
    for bad in (-1, 65536, 3.5, True):
        with pytest.raises(pgqueue.InvalidOptionError, match="a metrics port is 0 to 65535"):
            metrics.serve(bad)  # type: ignore[arg-type]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(pgqueue.PgQueueError, match=r"cannot serve metrics on 127\.0\.0\.1"):
            metrics.serve(taken.getsockname()[1], "127.0.0.1")


async def _positive(count: Awaitable[int]) -> bool:
    return await count > 0
