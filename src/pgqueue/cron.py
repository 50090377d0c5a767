"""Cron slot maths: pure functions over croniter, in the schedule's time zone (no I/O)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from .errors import InvalidScheduleError

__all__ = ["check_cron", "check_timezone", "latest_slot", "next_slot"]


def check_cron(expression: object) -> str:
    """Return ``expression`` if croniter accepts it (5 fields, or 6 with seconds)."""
    if not isinstance(expression, str) or not croniter.is_valid(expression):
        raise InvalidScheduleError(f"invalid cron expression {expression!r}")
    if len(expression.split()) > 6:  # a year field: the schedule would end
        raise InvalidScheduleError(
            f"cron expression {expression!r} has a year field; use 5 fields, or 6 with seconds"
        )
    try:  # valid fields can still name no date at all, such as February 30th
        croniter(expression, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterError:
        raise InvalidScheduleError(f"cron expression {expression!r} never fires") from None
    return expression


def check_timezone(tz: object) -> ZoneInfo:
    """The time zone named ``tz`` (an IANA name such as ``Europe/Berlin``)."""
    if not isinstance(tz, str) or not tz:
        raise InvalidScheduleError(f"invalid time zone {tz!r}")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidScheduleError(f"unknown time zone {tz!r}") from None


# Wider than any DST shift: wall-clock order and real order agree outside such a window.
_WINDOW = timedelta(hours=3)


def _instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The first instant at which the zone's wall clock shows ``wall`` (naive), in UTC.

    As in RFC 5545: a wall time that happens twice (clocks go back) counts once, the first
    time; a wall time skipped by clocks going forward counts with the offset before the
    change (02:30 on a night that jumps from 02:00 to 03:00 is 03:30).
    """
    return wall.replace(tzinfo=zone, fold=0).astimezone(timezone.utc)


def _shift(wall: datetime, zone: ZoneInfo) -> timedelta:
    """How far wall-clock order may disagree with real order near ``wall``: zero unless a
    DST change is within a few hours."""
    before, after = zone.utcoffset(wall - _WINDOW), zone.utcoffset(wall + _WINDOW)
    return abs(after - before) if before is not None and after is not None else _WINDOW


def latest_slot(expression: str, tz: str, now: datetime) -> datetime:
    """The latest slot at or before ``now``, in UTC. Slots are the wall-clock times that
    match ``expression`` in zone ``tz``; across DST changes, real time never goes back
    from one slot to the next and no wall-clock time fires twice."""
    zone = check_timezone(tz)
    wall = now.astimezone(zone).replace(tzinfo=None, microsecond=0)
    # croniter walks naive wall times (its own DST handling goes back on repeated hours);
    # near a DST change, keep looking a shift further for a later instant.
    walker = croniter(expression, wall + _shift(wall, zone) + timedelta(seconds=1))
    best: datetime | None = None
    best_wall = wall
    while True:
        candidate: datetime = _step(walker.get_prev, expression)
        if best is not None and candidate < best_wall - _shift(best_wall, zone):
            return best
        instant = _instant(candidate, zone)
        if instant <= now and (best is None or instant > best):
            best, best_wall = instant, candidate


def next_slot(expression: str, tz: str, after: datetime) -> datetime:
    """The first slot strictly after ``after``, in UTC (see :func:`latest_slot`)."""
    zone = check_timezone(tz)
    wall = after.astimezone(zone).replace(tzinfo=None)
    walker = croniter(expression, wall - _shift(wall, zone))
    best: datetime | None = None
    best_wall = wall
    while True:
        candidate: datetime = _step(walker.get_next, expression)
        if best is not None and candidate > best_wall + _shift(best_wall, zone):
            return best
        instant = _instant(candidate, zone)
        if instant > after and (best is None or instant < best):
            best, best_wall = instant, candidate


def _step(move: Callable[[type[datetime]], datetime], expression: str) -> datetime:
    try:
        return move(datetime)
    except CroniterError as exc:  # an expression stored before it was checked as today
        raise InvalidScheduleError(f"cron expression {expression!r} has no slot: {exc}") from None
