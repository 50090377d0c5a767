"""Cron and maintenance across several instances, with the database's clock moved by the
test."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg import sql

import pgqueue
from pgqueue import AsyncPgQueue, MaintenanceSettings, PgQueue
from pgqueue.testing import asent_jobs


async def test_three_instances_for_a_simulated_hour(
    dsn: str, schema: str, conn: psycopg.Connection[Any]
) -> None:
    # Half past a minute; the test moves the schema's clock, which every instance reads.
    with PgQueue(dsn, schema=schema, maintenance=False) as setup:
        setup.set_clock(setup.now().replace(second=30, microsecond=0))
    settings = MaintenanceSettings(archive_completed_after=60)
    # No periodic runner: the test drives every tick itself, with these settings.
    instances = [AsyncPgQueue(dsn, schema=schema, maintenance=False) for _ in range(3)]
    for pq in instances:
        pq.maintenance_settings = settings

        @pq.cron("* * * * *", name="every-minute", data={"kind": "minute"})
        async def every_minute(data: Any) -> None: ...

        @pq.cron("*/15 * * * *", name="quarterly", tz="Europe/Berlin")
        async def quarterly(data: Any) -> None: ...

    async with instances[0], instances[1], instances[2]:
        completed: Counter[int] = Counter()
        archived_total = 0
        for _ in range(60 * 6):  # an hour in 10-second steps
            await instances[0].move_clock(10)
            results = await asyncio.gather(
                *(pq.run_schedules() for pq in instances),
                *(pq.maintain() for pq in instances),
            )
            archived_total += sum(
                r.archived for r in results[3:] if isinstance(r, pgqueue.MaintenanceResult)
            )
            # Complete whatever was sent, so maintenance has finished jobs to archive.
            for job in await instances[0].fetch("every-minute", 10):
                assert await instances[0].complete(job.id) == [job.id]
                completed[job.id] += 1
        minute_jobs = await asent_jobs(instances[0], "every-minute")
        quarter_jobs = await asent_jobs(instances[0], "quarterly")
    assert len(minute_jobs) == 60  # one job per slot of the hour
    assert {tuple(j.data.items()) for j in minute_jobs} == {(("kind", "minute"),)}
    assert len(quarter_jobs) == 4
    assert max(completed.values()) == 1
    archive_rows = conn.execute(
        sql.SQL("SELECT count(*), count(DISTINCT id) FROM {}.archive").format(
            sql.Identifier(schema)
        )
    ).fetchone()
    assert archive_rows is not None and archive_rows[0] == archive_rows[1] == archived_total
    assert archived_total >= 55  # all but the last minute's completions


def test_missed_slots_are_sent_once_on_restart(dsn: str, schema: str) -> None:
    with PgQueue(dsn, schema=schema, maintenance=False) as pq:
        pq.set_clock(datetime(2026, 6, 1, 12, 0, 30, tzinfo=timezone.utc))
        pq.create_queue("report")
        pq.schedule("report", "*/5 * * * *", {"r": 1})
        assert pq.run_schedules() == []  # 12:00 was before the schedule existed
        pq.move_clock(timedelta(hours=3))  # everything was down for three hours
        assert len(pq.run_schedules()) == 1  # one job, not 36
        assert pq.run_schedules() == []
        pq.move_clock(timedelta(minutes=5))
        assert len(pq.run_schedules()) == 1


@pytest.mark.parametrize("back", ["set_clock", "move_clock", "set_clock(None)"])
def test_a_schedule_fires_at_its_next_slot_after_the_clock_went_back(
    dsn: str, schema: str, back: str
) -> None:
    with PgQueue(dsn, schema=schema, maintenance=False) as pq:
        pq.set_clock(datetime(2036, 6, 1, 12, 0, 30, tzinfo=timezone.utc))
        pq.create_queue("report")
        pq.schedule("report", "*/5 * * * *", {"r": 1})
        pq.move_clock(timedelta(minutes=5))
        assert len(pq.run_schedules()) == 1  # 12:05 of 2036 sent
        if back == "set_clock":
            pq.set_clock(datetime(2026, 3, 1, 9, 0, 30, tzinfo=timezone.utc))
        elif back == "move_clock":
            pq.move_clock(timedelta(days=-3))
        else:
            pq.set_clock(None)  # the database's time: years before 2036
        assert pq.run_schedules() == []  # neither at once nor an old slot
        pq.move_clock(timedelta(minutes=5))
        (sent,) = pq.run_schedules()  # the next slot, not one after 2036-06-01 12:05
        job = pq.get_job_by_id(sent)
        assert job is not None and job.created_at is not None and job.created_at <= pq.now()
        (info,) = pq.get_schedules()
        assert info.last_slot is not None and info.last_slot <= pq.now()


def test_schedule_management_and_validation(pq: PgQueue) -> None:
    pq.create_queue("nightly")
    pq.schedule("nightly", "0 3 * * *", {"x": 1}, tz="Europe/Berlin", priority=5)
    (info,) = pq.get_schedules()
    assert (info.name, info.cron, info.tz, info.data, info.options) == (
        "nightly",
        "0 3 * * *",
        "Europe/Berlin",
        {"x": 1},
        {"priority": 5},
    )
    assert info.from_code is False
    with pytest.raises(pgqueue.InvalidScheduleError, match="cron"):
        pq.schedule("nightly", "0 25 * * *")
    with pytest.raises(pgqueue.InvalidScheduleError, match="Atlantis"):
        pq.schedule("nightly", "0 3 * * *", tz="Atlantis/Capital")
    with pytest.raises(pgqueue.InvalidOptionError, match="bogus"):
        pq.schedule("nightly", "0 3 * * *", bogus=1)
    with pytest.raises(pgqueue.QueueNotFoundError):
        pq.schedule("no-queue", "0 3 * * *")
    (still,) = pq.get_schedules()
    assert still.cron == "0 3 * * *"  # nothing was written by the refused calls
    assert pq.unschedule("nightly") is True
    assert pq.unschedule("nightly") is False
    assert pq.get_schedules() == []


def test_code_schedules_are_synced_and_pruned(dsn: str, schema: str) -> None:
    first = PgQueue(dsn, schema=schema, maintenance=False)

    @first.cron("*/5 * * * *", name="old-job")
    def old_job(data: Any) -> None: ...

    @first.cron("0 * * * *", name="kept", data={"v": 1})
    def kept(data: Any) -> None: ...

    with first:
        pq_names = [s.name for s in first.get_schedules()]
        assert pq_names == ["kept", "old-job"]
        first.create_queue("runtime")
        first.schedule("runtime", "0 0 * * *")
    # A new version of the application declares "kept" differently and drops "old-job".
    second = PgQueue(dsn, schema=schema, maintenance=False)

    @second.cron("30 * * * *", name="kept", data={"v": 2})
    def kept_again(data: Any) -> None: ...

    with second:
        schedules = {s.name: s for s in second.get_schedules()}
    assert set(schedules) == {"kept", "runtime"}  # runtime schedules are left alone
    assert schedules["kept"].cron == "30 * * * *" and schedules["kept"].data == {"v": 2}
    # A process that declares no schedules removes none.
    with PgQueue(dsn, schema=schema, maintenance=False) as third:
        assert len(third.get_schedules()) == 2


def test_cron_declaration_errors_are_immediate() -> None:
    pq = PgQueue("postgresql://localhost/unused")
    with pytest.raises(pgqueue.InvalidScheduleError):
        pq.cron("not a cron")
    with pytest.raises(pgqueue.InvalidScheduleError):
        pq.cron("* * * * *", tz="Nowhere/Land")
    with pytest.raises(pgqueue.InvalidOptionError):
        pq.cron("* * * * *", name="x", retry_limit=-3)(lambda data: None)


def test_a_deleted_queue_takes_its_schedules_and_a_failing_one_stops_no_other(
    dsn: str, schema: str, conn: psycopg.Connection[Any]
) -> None:
    with PgQueue(dsn, schema=schema, maintenance=False) as pq:
        pq.set_clock(datetime(2026, 6, 1, 12, 0, 30, tzinfo=timezone.utc))
        for name in ("gone", "broken", "fine"):
            pq.create_queue(name)
            pq.schedule(name, "* * * * *")
        assert pq.delete_queue("gone")
        assert [s.name for s in pq.get_schedules()] == ["broken", "fine"]
        # A schedule whose stored options no longer pass (written by hand, or by another
        # version) cannot send; the others still do.
        conn.execute(
            sql.SQL(
                'UPDATE {}.schedule SET options = \'{{"priority": "high"}}\' '
                "WHERE name = 'broken'"
            ).format(sql.Identifier(schema))
        )
        pq.move_clock(60)
        (sent,) = pq.run_schedules()
        job = pq.get_job_by_id(sent)
        assert job is not None and job.name == "fine"
        with pytest.raises(pgqueue.QueueNotFoundError):
            pq.schedule("gone", "* * * * *")


def test_a_schedule_whose_slot_cannot_be_computed_stops_no_other(
    dsn: str, schema: str, conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    with PgQueue(dsn, schema=schema, maintenance=False) as pq:
        pq.set_clock(datetime(2026, 6, 1, 12, 0, 30, tzinfo=timezone.utc))
        for name in ("elsewhere", "garbled", "fine"):
            pq.create_queue(name)
            pq.schedule(name, "* * * * *")
        # Written by a host whose time zone database knows a zone this one does not, and
        # by hand.
        conn.execute(
            sql.SQL(
                "UPDATE {0}.schedule SET tz = 'America/Nowhere' WHERE name = 'elsewhere'; "
                "UPDATE {0}.schedule SET cron = 'not a cron' WHERE name = 'garbled'"
            ).format(sql.Identifier(schema))
        )
        pq.move_clock(60)
        (sent,) = pq.run_schedules()
        job = pq.get_job_by_id(sent)
        assert job is not None and job.name == "fine"
        assert "schedule elsewhere is skipped" in caplog.text
        assert "schedule garbled is skipped" in caplog.text


def test_a_queue_has_one_schedule_per_key_each_sent_in_its_slots(pq: PgQueue) -> None:
    pq.set_clock(datetime(2026, 6, 1, 12, 0, 30, tzinfo=timezone.utc))
    pq.create_queue("report")
    pq.schedule("report", "0 * * * *", {"for": "all"})
    pq.schedule("report", "*/30 * * * *", {"for": "eu"}, key="eu")
    pq.schedule("report", "*/20 * * * *", {"for": "us"}, key="us")
    pq.schedule("report", "*/15 * * * *", {"for": "us"}, key="us")  # replaces its key's
    schedules = pq.get_schedules()
    assert [(s.key, s.cron) for s in schedules] == [
        (None, "0 * * * *"),
        ("eu", "*/30 * * * *"),
        ("us", "*/15 * * * *"),
    ]
    pq.move_clock(timedelta(minutes=30))  # 12:30: eu's and us's slots, not the hourly one
    sent = pq.run_schedules()
    assert sorted(j.data["for"] for j in pq.find_jobs("report") if j.id in sent) == ["eu", "us"]
    for bad in ("x" * 256, 5, "a\x00b"):
        with pytest.raises(pgqueue.InvalidScheduleError, match="key"):
            pq.schedule("report", "0 * * * *", key=bad)  # type: ignore[arg-type]
    with pytest.raises(pgqueue.InvalidOptionError, match="depends_on"):
        pq.schedule("report", "0 * * * *", depends_on=[1])
    assert pq.unschedule("report", key="eu") is True
    assert pq.unschedule("report", key="eu") is False
    assert [s.key for s in pq.get_schedules()] == [None, "us"]
    assert pq.unschedule("report") is True
    assert [s.key for s in pq.get_schedules()] == ["us"]


def test_stacked_cron_decorators_give_one_job_several_keyed_schedules(
    dsn: str, schema: str
) -> None:
    first = PgQueue(dsn, schema=schema, maintenance=False)

    @first.cron("0 8 * * *", key="morning", data={"at": "8"})
    @first.cron("0 20 * * *", key="evening", data={"at": "20"})
    def digest(data: Any) -> None: ...

    with first:
        assert [(s.name, s.key, s.from_code) for s in first.get_schedules()] == [
            ("digest", "evening", True),
            ("digest", "morning", True),
        ]
    second = PgQueue(dsn, schema=schema, maintenance=False)

    @second.cron("0 8 * * *", key="morning", data={"at": "8"})
    def digest_again(data: Any) -> None: ...

    with second:  # the evening schedule is no longer declared: it goes
        assert [s.key for s in second.get_schedules()] == ["morning"]
    with pytest.raises(pgqueue.InvalidInputError, match="stacked"):
        second.cron("0 9 * * *", key="x", priority=3)(digest_again)
    with pytest.raises(pgqueue.InvalidScheduleError, match="a key of its own"):
        second.cron("0 9 * * *", key="morning")(digest_again)  # the key is taken
