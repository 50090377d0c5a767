"""Background work and what it tells: one failing periodic step neither stops the others nor
goes unnoticed, and ``on()`` callbacks hear of it."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgqueue import (
    InvalidInputError,
    InvalidOptionError,
    JobState,
    MaintenanceResult,
    MaintenanceSettings,
    PgQueue,
)


def test_cron_keeps_firing_while_maintenance_fails(
    dsn: str, schema: str, conn: psycopg.Connection[Any]
) -> None:
    settings = MaintenanceSettings(interval=0.05)
    errors: queue.Queue[Exception] = queue.Queue()
    passes: queue.Queue[MaintenanceResult] = queue.Queue()
    with PgQueue(dsn, schema=schema, maintenance=settings) as pq:
        pq.on("maintenance", passes.put)
        passes.get(timeout=20)  # maintenance works, until the database refuses it
        # A periodic pass begins by writing to the version table: make that write fail.
        conn.execute(
            sql.SQL(
                """CREATE FUNCTION {schema}.refuse() RETURNS trigger LANGUAGE plpgsql AS
                $$BEGIN RAISE EXCEPTION 'maintenance is refused'; END$$;
                CREATE TRIGGER refuse BEFORE UPDATE ON {schema}.version
                FOR EACH ROW EXECUTE FUNCTION {schema}.refuse()"""
            ).format(schema=sql.Identifier(schema))
        )
        pq.on("error", errors.put)
        pq.create_queue("tick")
        pq.schedule("tick", "* * * * * *")  # every second
        assert "maintenance is refused" in str(errors.get(timeout=20))
        deadline = time.monotonic() + 20
        while not pq.get_queue_stats("tick")[0].waiting:
            assert time.monotonic() < deadline, "cron stopped when maintenance failed"
            time.sleep(0.05)  # polling the outcome, not synchronising
        assert "maintenance is refused" in str(errors.get(timeout=20))  # and still failing


def test_events_reach_every_callback_and_a_failing_one_is_only_logged(
    dsn: str, schema: str, caplog: Any
) -> None:
    listening: queue.Queue[str] = queue.Queue()
    with PgQueue(dsn, schema=schema, maintenance=False) as pq:
        with pytest.raises(InvalidInputError, match="unknown event"):
            pq.on("finished", print)  # type: ignore[call-overload]

        async def coroutine(worker_id: str) -> None: ...

        with pytest.raises(InvalidInputError, match="plain function"):
            pq.on("listening", coroutine)  # it would never be awaited

        def broken(worker_id: str) -> None:
            raise RuntimeError("a broken observer")

        def leaving(worker_id: str) -> None:
            raise SystemExit(3)

        pq.on("listening", broken)
        pq.on("listening", leaving)
        pq.on("listening", listening.put)

        @pq.job("noop")
        def noop(data: Any) -> None: ...

        worker = threading.Thread(target=pq.work, kwargs={"poll_interval": 0.1})
        worker.start()
        worker_id = listening.get(timeout=20)  # the worker listens: it emitted its id
        noop.send()
        deadline = time.monotonic() + 20
        while pq.get_queue_stats("noop")[0].counts[JobState.completed] != 1:
            assert time.monotonic() < deadline, "the worker stopped working"
            time.sleep(0.05)  # polling the outcome, not synchronising
        pq.stop_working()  # from another thread: work() returns, the object stays started
        worker.join(30)
        assert not worker.is_alive()
        assert pq.send("noop") is not None
    assert worker_id and "listening callback" in caplog.text and "a broken observer" in caplog.text
    assert "SystemExit: 3" in caplog.text


def test_a_stop_asked_as_work_begins_is_kept(dsn: str, schema: str) -> None:
    with PgQueue(dsn, schema=schema, maintenance=False) as pq:

        @pq.job("noop")
        def noop(data: Any) -> None: ...

        assert not pq.working
        for _ in range(5):  # the stop lands before, during or after the worker's start
            worker = threading.Thread(target=pq.work, kwargs={"poll_interval": 60})
            worker.start()
            deadline = time.monotonic() + 20
            while not pq.working and worker.is_alive():
                assert time.monotonic() < deadline, "work() never began"
            pq.stop_working()
            worker.join(30)
            assert not worker.is_alive() and not pq.working


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("concurrency", 2.5),
        ("concurrency", "3"),
        ("concurrency", True),
        ("concurrency", 0),
        ("threads", 0),
        ("poll_interval", float("nan")),
        ("poll_interval", float("inf")),
        ("poll_interval", 0),
        ("shutdown_timeout", -1),
        ("shutdown_timeout", float("nan")),
        ("heartbeat_seconds", 0.01),
        ("queues", "noop"),
    ],
)
def test_bad_work_options_are_refused_and_work_goes_on(
    dsn: str, schema: str, option: str, value: Any
) -> None:
    with PgQueue(dsn, schema=schema, maintenance=False) as pq:

        @pq.job("noop")
        def noop(data: Any) -> None: ...

        with pytest.raises(InvalidOptionError, match=option):
            pq.work(until_empty=True, **{option: value})
        assert not pq.working
        noop.send()
        pq.work(until_empty=True)  # the refused call left nothing behind
        assert pq.get_queue_stats("noop")[0].counts[JobState.completed] == 1
        with pytest.raises(InvalidOptionError, match="heartbeat_seconds"):
            noop.send(heartbeat_seconds=0.01)  # a run could not keep such a promise
