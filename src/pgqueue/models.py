"""Job states, job and queue options, and the records the API returns."""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ._config import check_name
from .errors import InvalidNameError, InvalidOptionError

__all__ = [
    "MAX_SECONDS",
    "Job",
    "JobOptions",
    "JobState",
    "Policy",
    "QueueInfo",
    "QueueOptions",
    "QueueStats",
    "ScheduleInfo",
    "parse_options",
]

_INT4 = 2**31 - 1
# The longest duration any option takes, in seconds: ten years.
MAX_SECONDS = 10 * 365 * 86400
# The shortest heartbeat a run may promise: a worker beats every third of it, at most ten
# times a second, and a shorter one would lapse while the worker is healthy.
MIN_HEARTBEAT = 0.3
# The most starts a queue's rate limit counts per window: the database keeps each start
# of the window (on the queue's row) to hold the limit over every window, not just some.
MAX_RATE = 10_000


class JobState(str, enum.Enum):
    """The states of a job. Declared in the database in this order, so ``state < 'active'``
    means "waiting to run" and ``state > 'active'`` means finished.

    Which event moves a job from which state to which is written once, in
    :data:`pgqueue.lifecycle.TRANSITIONS` (docs/architecture.md draws it). completed,
    failed, cancelled and expired are final: maintenance moves them to the archive after
    their retention and deletes them from there after ``delete_after``.

    Example:
        ```python
        job = pq.get_job_by_id(job_id)
        if job is not None and job.state is JobState.failed:
            pq.retry(job.id)
        ```
    """

    created = "created"
    """Waiting for start_after, then for a worker."""
    retry = "retry"
    """Failed with retries left, or handed back; waiting for its start."""
    active = "active"
    """Claimed by exactly one worker."""
    completed = "completed"
    """Handler returned; output holds the result."""
    expired = "expired"
    """Ran past expire_in, heartbeat went stale, or waited past retention."""
    cancelled = "cancelled"
    """Cancelled by a user; resume() sends it back to created."""
    failed = "failed"
    """Failed with no retries left; retry() sends it back to retry."""

    @property
    def finished(self) -> bool:
        """True for the states a job does not leave by itself."""
        return self in _FINISHED


_FINISHED = frozenset({JobState.completed, JobState.expired, JobState.cancelled, JobState.failed})

Policy = Literal["standard", "short", "singleton", "stately"]


class _Options(BaseModel):
    # Strict: "3" is not an integer, 1 and "yes" are not booleans (a float takes an int).
    # Every duration is at most MAX_SECONDS, so no time the database computes from them
    # can leave its range.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    retry_limit: int | None = Field(None, ge=0, le=_INT4)
    retry_delay: float | None = Field(None, ge=0, le=MAX_SECONDS)
    retry_backoff: bool | None = None
    retry_delay_max: float | None = Field(None, gt=0, le=MAX_SECONDS)
    expire_in: float | None = Field(None, gt=0, le=MAX_SECONDS)
    heartbeat_seconds: float | None = Field(None, ge=MIN_HEARTBEAT, le=MAX_SECONDS)
    retention: float | None = Field(None, gt=0, le=MAX_SECONDS)
    delete_after: float | None = Field(None, ge=0, le=MAX_SECONDS)
    dead_letter: str | None = None

    @field_validator("dead_letter")
    @classmethod
    def _dead_letter_name(cls, value: str | None) -> str | None:
        return None if value is None else check_name(value, "dead_letter queue")

    @field_validator(
        "retry_delay",
        "retry_delay_max",
        "expire_in",
        "heartbeat_seconds",
        "retention",
        "delete_after",
        mode="before",
    )
    @classmethod
    def _seconds(cls, value: object) -> object:
        if isinstance(value, timedelta):
            return value.total_seconds()
        if isinstance(value, bool):
            raise ValueError("expected seconds (a number or timedelta), got a bool")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("must be a finite number of seconds")
        return value


class JobOptions(_Options):
    """Options of one job; anything left out falls back to its queue, then to the defaults.

    ``start_after`` is kept as given: a date, or a delay in seconds that the database adds
    to its own clock (so a host whose clock is off still starts the job on time).

    Example:
        ```python
        JobOptions(priority=5, start_after=60, singleton_key="user-7")  # what send checks
        pq.send("emails", {"to": "ada@example.com"}, priority=5, start_after=60)
        ```
    """

    priority: int | None = Field(None, ge=-_INT4, le=_INT4)
    start_after: datetime | float | None = None
    singleton_key: str | None = Field(None, min_length=1, max_length=255)
    singleton_seconds: int | None = Field(None, ge=1, le=_INT4)
    singleton_next_slot: bool | None = None
    group: str | None = Field(None, min_length=1, max_length=255)

    @field_validator("singleton_key", "group")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        return _storable_text(value)

    @field_validator("start_after", mode="before")
    @classmethod
    def _start_after(cls, value: object) -> object:
        if value is None or isinstance(value, datetime):
            if isinstance(value, datetime) and value.tzinfo is None:
                raise ValueError("a datetime must be timezone-aware")
            return value
        if isinstance(value, timedelta):
            value = value.total_seconds()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("expected a datetime, a timedelta or a number of seconds")
        if not 0 <= value <= MAX_SECONDS:  # NaN fails this too; ints of any size compare
            raise ValueError(f"seconds must be between 0 and {MAX_SECONDS} (ten years)")
        return float(value)


class QueueOptions(_Options):
    """Settings of a queue: its policy and the defaults for the jobs sent to it.

    Example:
        ```python
        QueueOptions(policy="singleton", retry_limit=3, rate_limit=(10, 1.0))  # checked so
        pq.create_queue("emails", policy="singleton", retry_limit=3, rate_limit=(10, 1.0))
        ```
    """

    policy: Policy | None = None
    description: str | None = Field(None, max_length=10_000)
    # Limits across every worker: jobs active at once, and starts per window of seconds.
    concurrency: int | None = Field(None, ge=1, le=_INT4)
    rate_limit: tuple[int, float] | None = None
    # Groups of the queue's jobs: active jobs per group, starts per group per window of
    # seconds, and one at a time in order.
    group_concurrency: int | None = Field(None, ge=1, le=_INT4)
    group_rate_limit: tuple[int, float] | None = None
    ordered: bool | None = None

    @field_validator("rate_limit", "group_rate_limit", mode="before")
    @classmethod
    def _rate_limit(cls, value: object) -> object:
        if value is None:
            return None
        if not isinstance(value, tuple | list) or len(value) != 2:
            raise ValueError("expected (count, seconds): at most count starts per seconds")
        count, seconds = value
        if isinstance(seconds, timedelta):
            seconds = seconds.total_seconds()
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_RATE:
            raise ValueError(f"the count must be an integer from 1 to {MAX_RATE}")
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not 0.001 <= seconds <= MAX_SECONDS  # NaN fails this too
        ):
            raise ValueError(f"the seconds must be a number from 0.001 to {MAX_SECONDS}")
        return (count, float(seconds))

    @field_validator("description")
    @classmethod
    def _description(cls, value: str | None) -> str | None:
        return _storable_text(value)


def _storable_text(value: str | None) -> str | None:
    if value is not None and _UNSTORABLE.search(value):
        raise ValueError(
            "contains a NUL or lone surrogate character, which PostgreSQL cannot store"
        )
    return value


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def parse_options(model: type[_Options], options: dict[str, Any]) -> Any:
    """Validate ``options`` into ``model``, raising InvalidOptionError naming each bad option."""
    try:
        return model.model_validate(options)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]) or "options"
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown option {name!r}")
            else:
                msg = err["msg"].removeprefix("Value error, ")
                got = repr(err.get("input"))
                got = got if len(got) <= 80 else got[:77] + "..."
                problems.append(f"option {name!r}: {msg} (got {got})")
        raise InvalidOptionError("; ".join(problems)) from None
    except InvalidNameError as exc:
        raise InvalidOptionError(str(exc)) from None


@dataclass(slots=True)
class Job:
    """A job as stored: the record ``fetch`` and ``get_job_by_id`` return.

    Example:
        ```python
        job = pq.get_job_by_id(job_id)
        if job is not None:
            print(job.name, job.state, job.attempt, job.output, job.errors)
        ```
    """

    id: int
    """Its id, unique in the schema."""
    name: str
    """Its queue."""
    data: Any
    """What it was sent with (JSON)."""
    state: JobState
    """Where it is in its life."""
    priority: int = 0
    """Higher runs first."""
    retry_count: int = 0
    """Retries spent so far."""
    attempt: int = 0
    """How many times it was claimed."""
    run_id: int | None = None
    """The current (or last) run's token: what outcomes name."""
    retry_limit: int = 0
    """Retries allowed after the first failure."""
    retry_delay: float = 0.0
    """Seconds before a retry."""
    retry_backoff: bool = False
    """Whether the delay doubles at each retry (with jitter)."""
    retry_delay_max: float | None = None
    """The cap on the delay, in seconds."""
    expire_in: float = 900.0
    """Seconds a run may take before it is expired."""
    heartbeat_seconds: float | None = None
    """Seconds of silence after which a run counts as dead (None: the worker's)."""
    start_after: datetime | None = None
    """When it may start (its retry's time, once it failed)."""
    started_at: datetime | None = None
    """When its current (or last) run began."""
    created_at: datetime | None = None
    """When it was sent."""
    completed_at: datetime | None = None
    """When it finished."""
    keep_until: datetime | None = None
    """When it expires if it has not started by then (its retention)."""
    singleton_key: str | None = None
    """Its singleton key."""
    singleton_on: datetime | None = None
    """The start of its time slot, when sent with ``singleton_seconds``."""
    dead_letter: str | None = None
    """The queue that gets a copy of it if it fails for good."""
    delete_after: float = 0.0
    """Seconds it stays in the archive."""
    output: Any = None
    """What its handler returned, or the error of its last failure."""
    last_progress: Any = None
    """The latest value a running handler passed to ``job.progress()``."""
    group: str | None = None
    """The group it belongs to in its queue (a tenant, say)."""
    errors: list[dict[str, Any]] | None = None
    """Its failed attempts, oldest first (the last 20): each ``{attempt, worker,
    started_at, ended_at, error}``. None until one failed."""
    depends_on: list[int] | None = None
    """The jobs it waits for (see ``send``'s ``depends_on``)."""
    trace: dict[str, str] | None = field(default=None, compare=False)
    """The trace context it was sent in (W3C ``traceparent`` and ``tracestate``), when
    tracing was on where it was sent (see ``pgqueue.tracing``); None otherwise."""
    archived: bool = False
    """Whether it was read from the archive."""
    children: list[int] | None = field(default=None, compare=False)
    """The jobs that depend on it (read by ``get_job_by_id`` only; None elsewhere)."""
    parents_left: int | None = field(default=None, compare=False)
    """How many of its parents it still waits for, 0 once it may run (read by
    ``get_job_by_id`` only)."""
    logs: list[dict[str, Any]] | None = field(default=None, compare=False)
    """What its last attempts logged (``job.log()`` and captured ``logging`` records),
    oldest first, each ``{attempt, lines, dropped}``; a line is ``{at, level, message}``.
    Read by ``get_job_by_id`` only; None until a run logs something."""
    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    """Not set by pgqueue (empty)."""

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Job:
        """Build a Job from a database row (dict)."""
        known = dict(row)
        known["state"] = _STATES[known["state"]]
        if "progress" in known:
            known["last_progress"] = known.pop("progress")
        if "group_key" in known:
            known["group"] = known.pop("group_key")
        if not _JOB_FIELDS.issuperset(known):  # a row with more columns than a job has
            known = {k: v for k, v in known.items() if k in _JOB_FIELDS}
        return cls(**known)

    @classmethod
    def from_values(cls, values: tuple[Any, ...]) -> Job:
        """Build a Job from the columns of ``sql.JOB_COLUMNS``, in that order (the order of
        the fields up to ``trace``)."""
        return cls(values[0], values[1], values[2], _STATES[values[3]], *values[4:])


_JOB_FIELDS = frozenset(Job.__dataclass_fields__) - {"extra"}
_STATES = {state.value: state for state in JobState}


@dataclass(slots=True, frozen=True)
class QueueInfo:
    """A queue and its settings.

    Example:
        ```python
        info = pq.get_queue("emails")
        if info is not None:
            print(info.policy, info.retry_limit, info.paused)
        ```
    """

    name: str
    policy: str
    retry_limit: int | None
    retry_delay: float | None
    retry_backoff: bool | None
    retry_delay_max: float | None
    expire_in: float | None
    heartbeat_seconds: float | None
    retention: float | None
    delete_after: float | None
    dead_letter: str | None
    description: str | None
    paused: bool
    created_at: datetime
    updated_at: datetime
    concurrency: int | None = None
    """Jobs of the queue active at once, across workers."""
    rate_limit: tuple[int, float] | None = None
    """(count, seconds): starts per window."""
    group_concurrency: int | None = None
    """Jobs of one group active at once."""
    ordered: bool = False
    """A group's jobs run one at a time, in order."""
    group_rate_limit: tuple[int, float] | None = None
    """(count, seconds): starts per group."""


class GroupStats(NamedTuple):
    """One group of a grouped queue: its waiting and active jobs, and the starts its rate
    limit allows now (None: the queue has no group rate limit).

    Example:
        ```python
        [stats] = pq.get_queue_stats("uploads")
        for group, counts in stats.groups.items():
            print(group, counts.waiting, counts.active, counts.rate_left)
        ```
    """

    waiting: int
    active: int
    rate_left: int | None = None


@dataclass(slots=True, frozen=True)
class QueueStats:
    """How many jobs a queue holds in each state, and how long the oldest has waited.

    Example:
        ```python
        for stats in pq.get_queue_stats():
            print(stats.name, stats.waiting, stats.counts[JobState.failed])
        ```
    """

    name: str
    counts: dict[JobState, int]
    oldest_waiting_seconds: float | None
    concurrency: int | None = None
    """The queue's limit of active jobs across workers."""
    rate_limit: tuple[int, float] | None = None
    """(count, seconds): its limit of starts."""
    rate_left: int | None = None
    """Starts its rate limit allows now."""
    group_concurrency: int | None = None
    """Its limit of active jobs per group."""
    ordered: bool = False
    group_rate_limit: tuple[int, float] | None = None
    """(count, seconds): starts per group."""
    groups: dict[str, GroupStats] = field(default_factory=dict)
    """The groups with the most waiting jobs (at most ten), most waiting first."""

    @property
    def waiting(self) -> int:
        """Jobs waiting to run (created or retry, due or not)."""
        return self.counts[JobState.created] + self.counts[JobState.retry]

    @property
    def active(self) -> int:
        """Jobs running now."""
        return self.counts[JobState.active]


@dataclass(slots=True, frozen=True)
class ScheduleInfo:
    """A cron schedule: it sends ``data`` to queue ``name`` at every slot of ``cron``.

    Example:
        ```python
        for schedule in pq.get_schedules():
            print(schedule.name, schedule.cron, schedule.tz, schedule.from_code)
        ```
    """

    name: str
    cron: str
    tz: str
    data: Any
    options: dict[str, Any]
    from_code: bool
    last_slot: datetime | None
    created_at: datetime
    updated_at: datetime
    key: str | None = None  # tells several schedules of one queue apart
