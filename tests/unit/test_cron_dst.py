"""Cron slots across DST changes: real time never goes back, no wall-clock time fires twice."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pgqueue
from pgqueue._cron import check_cron, latest_slot, next_slot

BERLIN = "Europe/Berlin"


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)


def slots_seen(expression: str, tz: str, start: datetime, hours: float) -> list[datetime]:
    """The distinct latest slots a scheduler ticking every minute would see."""
    seen: list[datetime] = []
    now = start
    while now < start + timedelta(hours=hours):
        slot = latest_slot(expression, tz, now)
        assert slot <= now
        assert not seen or slot >= seen[-1], f"went back at {now}: {slot} < {seen[-1]}"
        if not seen or slot != seen[-1]:
            seen.append(slot)
        now += timedelta(minutes=1)
    return seen[1:]  # the first one was before start


def test_a_daily_job_in_the_repeated_hour_fires_once() -> None:
    # 2026-10-25: Berlin goes from 03:00 CEST back to 02:00 CET (01:00 UTC); 02:30 happens
    # at 00:30 UTC and again at 01:30 UTC.
    assert slots_seen("30 2 * * *", BERLIN, utc(2026, 10, 24, 20), 12) == [utc(2026, 10, 25, 0, 30)]


def test_hourly_jobs_fire_once_per_wall_clock_hour_when_clocks_go_back() -> None:
    seen = slots_seen("0 * * * *", BERLIN, utc(2026, 10, 24, 21, 30), 6)
    # 00:00, 01:00, 02:00 CEST, (02:00 CET is the same wall time), 03:00, 04:00 CET.
    assert seen == [
        utc(2026, 10, 24, 22),
        utc(2026, 10, 24, 23),
        utc(2026, 10, 25, 0),
        utc(2026, 10, 25, 2),
        utc(2026, 10, 25, 3),
    ]


def test_a_skipped_wall_time_fires_once_an_hour_later() -> None:
    # 2026-03-29: Berlin jumps from 02:00 CET to 03:00 CEST (01:00 UTC); 02:30 never shows,
    # so it counts as 03:30 CEST (RFC 5545), and the schedule still fires once that day.
    assert slots_seen("30 2 * * *", BERLIN, utc(2026, 3, 28, 20), 12) == [utc(2026, 3, 29, 1, 30)]
    every_half_hour = slots_seen("*/30 * * * *", BERLIN, utc(2026, 3, 29, 0, 10), 2)
    assert every_half_hour == [
        utc(2026, 3, 29, 0, 30),
        utc(2026, 3, 29, 1),
        utc(2026, 3, 29, 1, 30),
        utc(2026, 3, 29, 2),
    ]


@pytest.mark.parametrize(
    ("expression", "tz", "start"),
    [
        ("*/20 * * * *", BERLIN, utc(2026, 10, 24, 23)),
        ("30 2 * * *", BERLIN, utc(2026, 10, 22)),
        ("15 1-3 * * *", "America/New_York", utc(2026, 3, 7)),
        ("0 0 * * *", "Australia/Lord_Howe", utc(2026, 4, 3)),  # a half-hour DST shift
        ("0 9 * * 1", BERLIN, utc(2026, 3, 20)),
    ],
)
def test_next_slot_chains_agree_with_latest_slot(expression: str, tz: str, start: datetime) -> None:
    chain = [next_slot(expression, tz, start)]
    for _ in range(12):
        chain.append(next_slot(expression, tz, chain[-1]))
    assert chain == sorted(set(chain))
    for slot in chain:
        assert latest_slot(expression, tz, slot) == slot
        assert latest_slot(expression, tz, slot - timedelta(microseconds=1)) < slot


@settings(max_examples=200, deadline=None)
@given(
    st.datetimes(
        min_value=datetime(2020, 1, 1),
        max_value=datetime(2035, 1, 1),
        timezones=st.just(timezone.utc),
    ),
    st.sampled_from(["*/7 * * * *", "0 * * * *", "30 2 * * *", "0 0 1 * *", "*/15 1-3 * * 0"]),
    st.sampled_from([BERLIN, "America/New_York", "Asia/Kolkata", "UTC", "Australia/Lord_Howe"]),
)
def test_latest_then_next_bracket_now(now: datetime, expression: str, tz: str) -> None:
    before = latest_slot(expression, tz, now)
    after = next_slot(expression, tz, now)
    assert before <= now < after
    assert next_slot(expression, tz, before) == after


def test_seconds_field_and_sparse_expressions() -> None:
    assert latest_slot("* * * * * */10", "UTC", utc(2026, 1, 1, 0, 0, 25)) == utc(
        2026, 1, 1, 0, 0, 20
    )
    assert latest_slot("0 0 29 2 *", "UTC", utc(2026, 5, 1)) == utc(2024, 2, 29)


def test_an_expression_that_never_fires_is_refused() -> None:
    with pytest.raises(pgqueue.InvalidScheduleError, match="never fires"):
        check_cron("0 0 30 2 *")
