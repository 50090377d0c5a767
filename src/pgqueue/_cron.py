"""Cron in one place: expressions and time zones checked, slot maths over croniter in the
schedule's time zone, and every schedule plan (declared in code or at run time, written,
found due, claimed and sent once per slot)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from ._config import check_name
from ._core import Core
from ._db import Plan, Stmt
from .errors import InvalidOptionError, InvalidScheduleError, QueueNotFoundError
from .models import ScheduleInfo

__all__ = ["Schedules", "check_cron", "check_timezone", "latest_slot", "next_slot"]

log = logging.getLogger("pgqueue.cron")


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


def label(info: ScheduleInfo) -> str:
    """How logs name a schedule: its queue, and its key if it has one."""
    return info.name if info.key is None else f"{info.name} (key {info.key!r})"


def schedule_key(key: object) -> str:
    """A schedule's key as stored: '' for none (None, or '')."""
    if key is None:
        return ""
    if not isinstance(key, str) or len(key) > 255 or "\x00" in key:
        raise InvalidScheduleError(
            f"a schedule key is a string of at most 255 characters, got {key!r}"
        )
    return key


class Schedules:
    """Every schedule plan, and the schedules an application declares in code (``@pq.cron``)
    until they are written: declaration, slots, claiming and sending, in one place."""

    def __init__(self, core: Core) -> None:
        self._core = core
        self.sql = core.sql
        self._declared: dict[tuple[str, str], tuple[str, str, Any, dict[str, Any]]] = {}
        self.synced = True  # every schedule declared in code is written

    def params(
        self,
        name: str,
        cron: str,
        data: Any,
        tz: str,
        options: Mapping[str, Any],
        from_code: bool,
        key: str | None = None,
    ) -> dict[str, Any]:
        """A schedule row, validated (cron, time zone, options, data, key); its
        ``last_slot`` is set by the plan that writes it, from the database's clock."""
        check_cron(cron)
        check_timezone(tz)
        # A schedule's options, not a send: no trace context (each slot's job has none).
        record, payload = self._core.job_record(name, data, options, traced=False)
        for refused in ("start_after", "singleton_next_slot", "depends_on", "run_anyway"):
            if refused in record:
                refused = {"run_anyway": "on_parent_failure"}.get(refused, refused)
                raise InvalidOptionError(f"option {refused!r} is not supported by schedules")
        return {
            "name": name,
            "key": schedule_key(key),
            "cron": cron,
            "tz": tz,
            "data": payload,
            "options": json.dumps(record),
            "from_code": from_code,
        }

    def declare(
        self,
        name: str,
        cron: str,
        tz: str,
        data: Any,
        options: Mapping[str, Any],
        key: str | None = None,
    ) -> None:
        """Keep a schedule declared in code, to be written by :meth:`write_declared`; its
        data, options and key are validated now."""
        self.params(name, cron, data, tz, options, True, key)
        declared = (cron, tz, data, dict(options))
        if self._declared.setdefault((name, schedule_key(key)), declared) != declared:
            raise InvalidScheduleError(
                f"job {name!r} has a schedule of key {key!r} already: give each of its "
                "schedules a key of its own"
            )
        self.synced = False

    def rewrite(self) -> None:
        """Write the schedules declared in code again at the next start (the queue object
        now points at another schema)."""
        self.sql = self._core.sql
        self.synced = not self._declared

    def write_declared(self) -> Plan[None]:
        """Plan: upsert the schedules declared in code; delete code schedules no longer
        declared (only when this application declares any, so a process that imports no
        schedules never removes them)."""
        rows = [
            self.params(name, cron, data, tz, options, True, key)
            for (name, key), (cron, tz, data, options) in self._declared.items()
        ]
        if not rows:
            return
        now = yield from self._core.now()
        for params in rows:
            yield Stmt(self.sql.schedule_upsert, self._with_last_slot(params, now))
        yield Stmt(
            self.sql.schedule_prune_code,
            {"names": [p["name"] for p in rows], "keys": [p["key"] for p in rows]},
        )

    def _with_last_slot(self, params: dict[str, Any], now: datetime) -> dict[str, Any]:
        return {**params, "last_slot": latest_slot(params["cron"], params["tz"], now)}

    def upsert(self, params: dict[str, Any]) -> Plan[None]:
        """Plan: create or replace a schedule (its queue must exist)."""
        (found,) = yield Stmt(self.sql.queue_exists, {"name": params["name"]})
        if not found["exists"]:
            raise QueueNotFoundError(params["name"])
        now = yield from self._core.now()
        yield Stmt(self.sql.schedule_upsert, self._with_last_slot(params, now))

    def delete(self, name: str, key: str | None = None) -> Plan[bool]:
        """Plan: delete a schedule (of ``key``); False if there was none."""
        check_name(name)
        rows = yield Stmt(self.sql.schedule_delete, {"name": name, "key": schedule_key(key)})
        return bool(rows)

    def all(self) -> Plan[list[ScheduleInfo]]:
        """Plan: every schedule, by name."""
        rows = yield Stmt(self.sql.schedule_list)
        return [ScheduleInfo(**{**r, "key": r["key"] or None}) for r in rows]

    def due(self) -> Plan[list[tuple[ScheduleInfo, datetime]]]:
        """Plan: the schedules whose latest slot by the database's clock has not been sent,
        with that slot.

        Only the latest slot counts: slots missed while every instance was down are sent
        once, not replayed. A schedule whose slot cannot be computed here (a time zone
        this host does not know) is logged and left out; the others are due as ever.
        """
        now = yield from self._core.now()
        due = []
        for info in (yield from self.all()):
            try:  # a row may hold what no check of today lets in
                slot = latest_slot(check_cron(info.cron), info.tz, now)
            except InvalidScheduleError as exc:
                log.error("schedule %s is skipped: %s", label(info), exc)
                continue
            if info.last_slot is None or slot > info.last_slot:
                due.append((info, slot))
        return due

    def after_clock(self, clock: Plan[None]) -> Plan[None]:
        """Plan: ``clock`` (one that sets or moves the clock), then every schedule whose
        last sent slot is after the clock's new time (it went back) restarts from the
        latest slot by that time: it fires at its next slot, not once the clock has passed
        the old one again."""
        yield from clock
        now = yield from self._core.now()
        for info in (yield from self.all()):
            if info.last_slot is None or info.last_slot <= now:
                continue
            try:
                slot = latest_slot(check_cron(info.cron), info.tz, now)
            except InvalidScheduleError:  # left as it is; due() logs it
                continue
            yield Stmt(
                self.sql.schedule_rewind,
                {"name": info.name, "key": info.key or "", "slot": slot},
            )

    def fire(self, info: ScheduleInfo, slot: datetime) -> Plan[int | None]:
        """Plan (in one transaction): claim the slot and send its job; None if another
        instance claimed it first."""
        claimed = yield Stmt(
            self.sql.schedule_claim_slot,
            {
                "name": info.name,
                "key": info.key or "",
                "cron": info.cron,
                "tz": info.tz,
                "slot": slot,
            },
        )
        if not claimed:
            return None
        return (yield from self._core.send(info.name, claimed[0]["data"], claimed[0]["options"]))
