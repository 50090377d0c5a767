"""Jobs, queues and schedules as plain JSON-ready dictionaries: what the API returns and
the templates show."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta
from typing import Any

from .._cron import next_slot
from ..models import Job, JobState, QueueInfo, QueueStats, ScheduleInfo

__all__ = [
    "WINDOW_BUCKETS",
    "WINDOW_SECONDS",
    "chart_bars",
    "dumps",
    "job_detail",
    "job_summary",
    "queue_row",
    "schedule_row",
]

# The throughput chart: the last hour, in twelve five-minute bars.
WINDOW_SECONDS = 3600.0
WINDOW_BUCKETS = 12
STATES = [state.value for state in JobState]


def _default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, JobState):
        return value.value
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return repr(value)  # anything else a handler stored: shown, never executed


def dumps(value: Any, indent: int | None = None) -> str:
    """JSON text of ``value`` (dates as ISO 8601, unknown objects as their repr)."""
    return json.dumps(value, default=_default, indent=indent, ensure_ascii=False)


def job_summary(job: Job) -> dict[str, Any]:
    """The fields of a job a list shows."""
    return {
        "id": job.id,
        "queue": job.name,
        "state": job.state.value,
        "attempt": job.attempt,
        "priority": job.priority,
        "singleton_key": job.singleton_key,
        "group": job.group,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "completed_at": job.completed_at,
        "archived": job.archived,
    }


def job_detail(job: Job) -> dict[str, Any]:
    """Every field of a job, its attempts' errors and logs, its parents and children."""
    fields = {f.name: getattr(job, f.name) for f in dataclasses.fields(job) if f.name != "extra"}
    fields["state"] = job.state.value
    fields["queue"] = fields.pop("name")
    fields["finished"] = job.state.finished
    return fields


def queue_row(
    info: QueueInfo | None, stats: QueueStats, throughput: list[tuple[int, int]] | None
) -> dict[str, Any]:
    """A queue: its counts per state, limits, the last hour's throughput and failure rate."""
    series = throughput or [(0, 0)] * WINDOW_BUCKETS
    completed = sum(c for c, _ in series)
    failed = sum(f for _, f in series)
    return {
        "name": stats.name,
        "paused": bool(info and info.paused),
        "policy": info.policy if info else None,
        "description": info.description if info else None,
        "counts": {state.value: n for state, n in stats.counts.items()},
        "waiting": stats.waiting,
        "active": stats.active,
        "oldest_waiting_seconds": stats.oldest_waiting_seconds,
        "limits": {
            "concurrency": stats.concurrency,
            "rate_limit": stats.rate_limit,
            "rate_left": stats.rate_left,
            "group_concurrency": stats.group_concurrency,
            "group_rate_limit": stats.group_rate_limit,
            "ordered": stats.ordered,
            "retry_limit": info.retry_limit if info else None,
            "expire_in": info.expire_in if info else None,
            "dead_letter": info.dead_letter if info else None,
        },
        "groups": {k: g._asdict() for k, g in stats.groups.items()},
        "last_hour": {
            "completed": completed,
            "failed": failed,
            "failure_rate": failed / (completed + failed) if completed + failed else None,
            "bucket_seconds": WINDOW_SECONDS / WINDOW_BUCKETS,
            "series": [{"completed": c, "failed": f} for c, f in series],
        },
    }


def schedule_row(info: ScheduleInfo, now: datetime, slots: int = 3) -> dict[str, Any]:
    """A schedule and its next ``slots`` slots after ``now`` (the schema's clock)."""
    upcoming: list[datetime] = []
    at = now
    for _ in range(slots):
        at = next_slot(info.cron, info.tz, at)
        upcoming.append(at)
    return {
        "name": info.name,
        "key": info.key,
        "cron": info.cron,
        "timezone": info.tz,
        "data": info.data,
        "options": info.options,
        "from_code": info.from_code,
        "last_sent": info.last_slot,
        "next_slots": upcoming,
    }


def chart_bars(
    series: list[dict[str, int]], width: int = 180, height: int = 36
) -> list[dict[str, float]]:
    """Stacked bars (completed below, failed above) for an inline SVG of ``series``."""
    peak = max((b["completed"] + b["failed"] for b in series), default=0) or 1
    step = width / max(len(series), 1)
    bars = []
    for i, bucket in enumerate(series):
        done = height * bucket["completed"] / peak
        bad = height * bucket["failed"] / peak
        bars.append(
            {
                "x": round(i * step + 1, 1),
                "w": round(max(step - 2, 1), 1),
                "done_y": round(height - done, 1),
                "done_h": round(done, 1),
                "bad_y": round(height - done - bad, 1),
                "bad_h": round(bad, 1),
                "completed": bucket["completed"],
                "failed": bucket["failed"],
            }
        )
    return bars
