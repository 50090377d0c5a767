"""Cron slot maths: wall-clock time zones across DST, validation."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

import pgqueue
from pgqueue._cron import check_cron, check_timezone, latest_slot, next_slot


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)


def test_latest_slot_includes_the_current_instant() -> None:
    assert latest_slot("*/5 * * * *", "UTC", utc(2026, 1, 1, 10, 5)) == utc(2026, 1, 1, 10, 5)
    assert latest_slot(
        "*/5 * * * *", "UTC", datetime(2026, 1, 1, 10, 4, 59, 999999, tzinfo=timezone.utc)
    ) == utc(2026, 1, 1, 10, 0)


def test_daily_slot_follows_the_wall_clock_across_dst() -> None:
    # 09:00 in Berlin is 08:00 UTC in winter and 07:00 UTC in summer (DST began 2026-03-29).
    assert latest_slot("0 9 * * *", "Europe/Berlin", utc(2026, 3, 28, 12)) == utc(2026, 3, 28, 8)
    assert latest_slot("0 9 * * *", "Europe/Berlin", utc(2026, 3, 30, 12)) == utc(2026, 3, 30, 7)
    assert next_slot("0 9 * * *", "Europe/Berlin", utc(2026, 10, 24, 12)) == utc(2026, 10, 25, 8)


def test_slots_in_a_day_are_distinct_and_ordered() -> None:
    slot = utc(2026, 3, 28, 23)
    seen = []
    for _ in range(30):
        slot = next_slot("0 * * * *", "Europe/Berlin", slot)
        seen.append(slot)
    assert seen == sorted(set(seen))  # DST day: no hour fires twice or goes backwards


@pytest.mark.parametrize(
    "expression",
    ["", "* * *", "61 * * * *", "every minute", None, 5, "* * * * * * 2026", "0 0 1 1 * 0 2026"],
)
def test_bad_expressions(expression: object) -> None:
    with pytest.raises(pgqueue.InvalidScheduleError):
        check_cron(expression)


@pytest.mark.parametrize("tz", ["", "Mars/Olympus", "../etc/passwd", None])
def test_bad_time_zones(tz: object) -> None:
    with pytest.raises(pgqueue.InvalidScheduleError):
        check_timezone(tz)


def test_an_expression_with_no_slot_is_a_schedule_error() -> None:
    # Stored before expressions were checked as today: no slot at or before 2026.
    with pytest.raises(pgqueue.InvalidScheduleError):
        latest_slot("* * * * * * 2030", "UTC", utc(2026, 1, 1))
