"""Maintenance: expire, archive and delete, in bounded batches, by one instance at a time.

Also the periodic runners (a task for the async flavour, a thread for the sync one) that
drive maintenance and cron in every started instance.

Every started queue object tries it every ``interval`` seconds, and one pass runs per
interval across all of them: a transaction-level advisory lock lets one instance at a time
in, which runs the pass only if no pass started within the interval (a timestamp on the
version table, moved forward in the pass's transaction). Every step is idempotent (rows are
locked with SKIP LOCKED and re-checked), so instances never expire or archive a job twice.
Every comparison of times is made in SQL by the database's clock, so an instance whose host
clock is off never expires, archives or deletes anything early.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from ._core import Core
from ._db import Plan, Stmt
from ._handlers import REGISTRY_RECENT
from ._payload import encode_json

__all__ = [
    "MaintenanceResult",
    "MaintenanceSettings",
    "maintain_plan",
]

log = logging.getLogger("pgqueue.maintenance")


@dataclass(frozen=True)
class MaintenanceSettings:
    """How often maintenance runs and how long finished jobs stay in the job table.

    Example:
        ```python
        settings = MaintenanceSettings(archive_completed_after=600, monitor_interval=30)
        pq = PgQueue(dsn, maintenance=settings)
        ```
    """

    interval: float = 2.0
    """Seconds between two periodic passes, across every instance on the schema."""
    archive_completed_after: float = 3600.0
    """Seconds a completed job stays in the job table before it moves to the archive."""
    archive_failed_after: float = 7 * 24 * 3600.0
    """The same for failed, cancelled and expired jobs."""
    monitor_interval: float = 60.0
    """Seconds between queue-stats reports to monitors."""
    batch_size: int = 1000
    """Rows one statement of a step handles."""
    max_batches: int = 100
    """Batches per step and pass at most, so one pass never runs for long."""


@dataclass
class MaintenanceResult:
    """What one pass did (all zero when another instance held the lock).

    Example:
        ```python
        result = pq.maintain()
        if result.ran and result.errors:
            print("maintenance steps rolled back:", result.errors)
        ```
    """

    ran: bool = False
    """False when another instance's pass made this one unneeded."""
    expired_active: int = 0
    """Runs expired: past ``expire_in``, or their heartbeat stale."""
    expired_waiting: int = 0
    """Jobs that waited past their retention without starting."""
    archived: int = 0
    """Finished jobs moved to the archive."""
    deleted: int = 0
    """Archived jobs deleted after ``delete_after``."""
    grouped: int = 0
    """Jobs of grouped queues sent without a group, given group ''."""
    rate_windows: int = 0
    """Groups' rate windows dropped, holding no start."""
    waits: int = 0
    """Waits for parents dropped: of jobs released, cancelled or deleted."""
    edges: int = 0
    """Edges to such jobs from parents that have not ended, dropped."""
    handlers: int = 0
    """Handler registrations no worker refreshed within the hour (see docs/operations.md)."""
    errors: list[str] = field(default_factory=list)
    """Steps that failed and were rolled back."""


_EXPIRED = encode_json({"type": "expired", "message": "ran past expire_in or lost its heartbeat"})


def maintain_plan(
    core: Core, settings: MaintenanceSettings, *, periodic: bool = False
) -> Plan[MaintenanceResult]:
    """Plan (in one transaction): one pass of every step, if no other instance is in one;
    when ``periodic``, only if no instance ran one in the last ``settings.interval``."""
    result = MaintenanceResult()
    (lock,) = yield Stmt(core.sql.maintenance_lock)
    if not lock["locked"]:
        return result
    if periodic:
        due = yield Stmt(core.sql.maintenance_due, {"interval": settings.interval})
        if not due:
            return result
    result.ran = True
    params: dict[str, Any] = {
        "limit": settings.batch_size,
        "completed_after": settings.archive_completed_after,
        "failed_after": settings.archive_failed_after,
        "recent": REGISTRY_RECENT,
    }
    steps: tuple[tuple[str, Callable[[], Plan[int]]], ...] = (
        ("expired_active", lambda: _expire_active(core, params)),
        ("expired_waiting", lambda: _batches(core.sql.job_expire_waiting, params)),
        ("archived", lambda: _batches(core.sql.job_archive, params)),
        ("deleted", lambda: _batches(core.sql.archive_delete, params)),
        ("grouped", lambda: _batches(core.sql.job_group_the_ungrouped, {**params, "name": None})),
        ("rate_windows", lambda: _batches(core.sql.group_rate_prune, params)),
        ("waits", lambda: _batches(core.sql.job_wait_prune, params)),
        ("edges", lambda: _batches(core.sql.job_edge_prune, params)),
        ("handlers", lambda: _batches(core.sql.handler_prune, params)),
    )
    for attr, step in steps:
        # Each step in a savepoint: one that fails (a row it cannot move, say) is rolled
        # back and reported, and the others still run.
        yield Stmt(core.sql.step_begin)
        try:
            for _ in range(settings.max_batches):
                done = yield from step()
                setattr(result, attr, getattr(result, attr) + done)
                if done < settings.batch_size:
                    break
        except psycopg.Error as exc:
            yield Stmt(core.sql.step_undo)
            setattr(result, attr, 0)
            result.errors.append(f"{attr}: {type(exc).__name__}: {exc}")
            log.error("maintenance step %s failed and was rolled back: %s", attr, exc)
        else:
            yield Stmt(core.sql.step_end)
    if result.expired_waiting:
        log.warning(
            "maintenance expired %d jobs that waited past their retention without starting",
            result.expired_waiting,
        )
    return result


def _expire_active(core: Core, params: dict[str, Any]) -> Plan[int]:
    """One batch: active jobs past their deadline fail as expired (to retry or expired)."""
    rows = yield Stmt(core.sql.job_stale_select, params)
    if not rows:
        return 0
    expired = yield from _expire_apart(core, [(r["id"], r["run_id"]) for r in rows])
    return expired


def _expire_apart(core: Core, runs: list[tuple[int, int | None]]) -> Plan[int]:
    """Expire these runs; when the database refuses (a trigger on one row, say), expire
    them in halves down to the rows it refuses, which are logged and left as they are."""
    yield Stmt(core.sql.step_begin)
    try:
        changed = yield from core.fail(
            [i for i, _ in runs],
            [r for _, r in runs],
            [_EXPIRED] * len(runs),
            final_states=["expired"] * len(runs),
        )
    except psycopg.Error as exc:
        yield Stmt(core.sql.step_undo)
        yield Stmt(core.sql.step_end)
        if len(runs) == 1:
            log.error("maintenance cannot expire job %s: %s", runs[0][0], exc)
            return 0
        middle = len(runs) // 2
        first = yield from _expire_apart(core, runs[:middle])
        second = yield from _expire_apart(core, runs[middle:])
        return first + second
    yield Stmt(core.sql.step_end)
    if changed:
        shown = ", ".join(map(str, changed[:20])) + (" ..." if len(changed) > 20 else "")
        log.warning(
            "maintenance expired %d running jobs that ran past expire_in or stopped beating "
            "(their worker died or lost the database): %s",
            len(changed),
            shown,
        )
    return len(runs)


def _batches(query: str, params: dict[str, Any]) -> Plan[int]:
    """One batch of a step that is one statement."""
    rows = yield Stmt(query, params)
    return len(rows)
