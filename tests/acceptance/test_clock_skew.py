"""A host whose clock is an hour off changes nothing: its maintenance expires no healthy job,
its cron neither skips nor doubles a slot, and its delays start on the database's time.

The skewed instance is a real process under ``faketime`` (Debian's package, which CI
installs); without it the test is skipped, unless PGQUEUE_REQUIRE_FAKETIME is set.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgqueue import JobState, PgQueue
from pgqueue._cron import latest_slot
from tests.acceptance.conftest import Conversation


class Skewed(Conversation):
    """The skewed instance: a process whose clock is ``offset`` away from the real one."""

    def __init__(self, dsn: str, schema: str, offset: str) -> None:
        super().__init__(
            [
                "faketime",
                "-f",
                offset,
                sys.executable,
                "-m",
                "tests.acceptance.skewed_client",
                dsn,
                schema,
            ]
        )
        assert self.ask(None) == {"ready": True}


@pytest.fixture
def faketime() -> None:
    if shutil.which("faketime") is None:
        if os.environ.get("PGQUEUE_REQUIRE_FAKETIME"):
            pytest.fail("faketime is not installed (apt-get install faketime)")
        pytest.skip("faketime is not installed (apt-get install faketime)")


@pytest.fixture
def skewed(
    dsn: str, schema: str, request: pytest.FixtureRequest, faketime: None
) -> Iterator[Skewed]:
    instance = Skewed(dsn, schema, request.param)
    try:
        yield instance
    finally:
        instance.close()


def jobs_of(conn: psycopg.Connection[Any], schema: str, name: str) -> int:
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {}.job WHERE name = %s").format(sql.Identifier(schema)),
        (name,),
    ).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("skewed", "hours"),
    [("+1h", 1), ("-1h", -1)],
    indirect=["skewed"],
    ids=["an hour fast", "an hour slow"],
)
def test_a_host_an_hour_off_changes_nothing(
    dsn: str, schema: str, conn: psycopg.Connection[Any], skewed: Skewed, hours: int
) -> None:
    believed = datetime.fromisoformat(skewed.ask("clock"))
    assert abs(believed - datetime.now(timezone.utc) - timedelta(hours=hours)) < timedelta(
        minutes=5
    ), "faketime did not move the instance's clock"

    with PgQueue(dsn, schema=schema, maintenance=False) as pq:
        # Healthy runs elsewhere: one within expire_in, one with a fresh heartbeat.
        pq.create_queue("work", expire_in=900)
        pq.create_queue("beating", heartbeat_seconds=120, expire_in=3 * 3600)
        pq.send("work")
        pq.send("beating")
        (running,) = pq.fetch("work")
        (beating,) = pq.fetch("beating")
        assert skewed.ask("maintain") == {"expired_active": 0, "expired_waiting": 0}
        for job in (running, beating):
            now = pq.get_job_by_id(job.id)
            assert now is not None and now.state is JobState.active

        # A delay starts on the database's time, within a second.
        before = pq.now()
        job_id = skewed.ask("send_after work 60")
        after = pq.now()
        sent = pq.get_job_by_id(job_id)
        assert sent is not None and sent.start_after is not None
        assert before + timedelta(seconds=59) <= sent.start_after <= after + timedelta(seconds=61)

        # Cron: two seconds before a minute, then minute after minute, the skewed instance
        # and a normal one both look; every slot is sent once.
        pq.create_queue("tick")
        pq.set_clock(pq.now().replace(second=58, microsecond=0))
        pq.schedule("tick", "* * * * *")
        for minute in range(4):
            first, second = (skewed.ask("cron"), pq.run_schedules())[:: 1 if minute % 2 else -1]
            assert first == second == []  # nothing due before the minute turns
            pq.move_clock(3)
            ran = [skewed.ask("cron"), pq.run_schedules()]
            if minute % 2:
                ran.reverse()
            assert sorted(len(r) for r in ran) == [0, 1], ran
            assert jobs_of(conn, schema, "tick") == minute + 1
            (schedule,) = pq.get_schedules()
            assert schedule.last_slot == latest_slot("* * * * *", "UTC", pq.now())
            pq.move_clock(57)  # two seconds before the next minute
