"""What the dashboard reads and does, written once for the JSON API and the pages: each
function takes the queue object and plain arguments, and raises :class:`Refused` for
input it will not act on (nothing is written then)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from .._async.queue import AsyncPgQueue
from ..errors import InvalidInputError, NotFoundError
from ..models import Job, JobState, QueueStats
from ._counts import QueueCounts
from ._present import (
    job_detail,
    job_summary,
    queue_row,
    schedule_row,
)

__all__ = [
    "BULK_BATCH",
    "BULK_MOST",
    "MAX_PAGE",
    "JobFilter",
    "Refused",
    "bulk_retry",
    "catalogue",
    "get_job",
    "job_action",
    "list_jobs",
    "parse_filter",
    "parse_job_id",
    "queue_action",
    "queues",
    "run_job",
    "schedules",
    "subscriptions",
]

MAX_PAGE = 500  # the most jobs one page lists
DEFAULT_PAGE = 50
BULK_BATCH = 1000  # jobs retried per transaction by a bulk retry
BULK_MOST = 100_000  # the most one bulk retry request retries (send it again for more)
_MAX_ID = 2**63 - 1
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
JOB_ACTIONS = ("retry", "cancel", "resume", "delete")
QUEUE_ACTIONS = ("pause", "resume", "purge")


class Refused(Exception):
    """A request the dashboard will not serve: its HTTP status, a message, and details
    (per-field validation errors) to show."""

    def __init__(self, status: int, message: str, details: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details or []


JobFilter = dict[str, Any]


def parse_job_id(text: object) -> int:
    """A job id from a path or body, or Refused(400)."""
    number = _whole(text)
    if number is None or not 1 <= number <= _MAX_ID:
        raise Refused(400, f"not a job id: {str(text)[:40]!r}")
    return number


def _whole(value: object) -> int | None:
    """An integer from a JSON number or a string of ASCII digits (int() would take " 7",
    "+7", "7_0" and other scripts' digits, "١٢", too); None from anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        return int(value)
    return None


def _text(params: Mapping[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise Refused(400, f"{name} must be a string")
    if len(value) > 255:
        raise Refused(400, f"{name} is longer than 255 characters")
    if _UNSTORABLE.search(value):
        raise Refused(400, f"{name} holds a NUL or lone surrogate, which no job's can")
    return value


def parse_filter(params: Mapping[str, Any], *, states: list[str] | None = None) -> JobFilter:
    """The job filter of a query string or a request body (queue, state, key, group, data
    as a JSON object, after, limit, archived), checked; Refused(400) for a bad one."""
    found: JobFilter = {
        "queue": _text(params, "queue"),
        "key": _text(params, "key"),
        "group": _text(params, "group"),
    }
    state = params.get("state") if states is None else states
    if isinstance(state, str):
        state = [s for s in state.split(",") if s]
    if state:
        if not isinstance(state, list) or not all(isinstance(s, str) for s in state):
            raise Refused(400, "state must be a state name, or several as a,b")
        unknown = sorted(set(state) - {s.value for s in JobState})
        if unknown:
            raise Refused(400, f"unknown state {unknown[0]!r}")
    found["state"] = list(state) if state else None
    data = params.get("data")
    if isinstance(data, str) and data:
        if len(data) > 10_000:
            raise Refused(400, "data filter is longer than 10,000 characters")
        try:
            data = json.loads(data)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise Refused(400, f"data is not JSON: {str(exc)[:200]}") from None
    elif data == "":
        data = None
    if data is not None and not isinstance(data, dict):
        raise Refused(400, "data must be a JSON object (the jobs whose data contains it)")
    found["data"] = data or None
    found["after"] = _int(params, "after", 0, 0, _MAX_ID)
    found["limit"] = _int(params, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    archived = params.get("archived")
    found["archived"] = archived in (True, "1", "true", "on")
    return found


def _int(params: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = params.get(name)
    if value is None or value == "":
        return default
    number = _whole(value)  # a query's text, or a JSON body's number
    if number is None or not low <= number <= high:
        raise Refused(400, f"{name} must be an integer from {low} to {high}")
    return number


async def queues(
    pq: AsyncPgQueue, counts: QueueCounts, name: str | None = None
) -> list[dict[str, Any]]:
    """Every queue (or one): counts, limits, last hour's throughput; Refused(404)."""
    infos = {q.name: q for q in await pq.get_queues()}
    if name is not None and name not in infos:
        raise Refused(404, f"no queue {name!r}")
    latest = await counts.get()
    stats = {s.name: s for s in latest.stats}
    rows = []
    for queue in [name] if name is not None else sorted(infos):
        found = stats.get(queue) or QueueStats(queue, dict.fromkeys(JobState, 0), None)
        row = queue_row(infos[queue], found, latest.throughput.get(queue))
        row["counted_seconds_ago"] = round(latest.age, 3)
        rows.append(row)
    return rows


async def list_jobs(pq: AsyncPgQueue, flt: JobFilter) -> dict[str, Any]:
    """One page of the jobs matching a filter, and the ``after`` of the next page."""
    jobs = await _find(pq, flt, flt["limit"], flt["after"])
    more = len(jobs) == flt["limit"]
    return {
        "jobs": [job_summary(j) for j in jobs],
        "next_after": jobs[-1].id if more and jobs else None,
    }


async def _find(pq: AsyncPgQueue, flt: JobFilter, limit: int, after: int) -> list[Job]:
    """The jobs matching a filter, ``limit`` of them after id ``after``."""
    return await pq.find_jobs(
        flt["queue"],
        state=flt["state"],
        key=flt["key"],
        group=flt["group"],
        data_contains=flt["data"],
        limit=limit,
        after=after,
        archived=flt["archived"],
    )


async def get_job(pq: AsyncPgQueue, job_id: int) -> dict[str, Any]:
    """One job, in full; Refused(404) if there is none."""
    job = await pq.get_job_by_id(job_id)
    if job is None:
        raise Refused(404, f"no job {job_id}")
    return job_detail(job)


async def job_action(pq: AsyncPgQueue, job_id: int, action: str) -> dict[str, Any]:
    """Retry, cancel, resume or delete one job; Refused(404) if there is none, 409 if its
    state does not allow it."""
    if action not in JOB_ACTIONS:
        raise Refused(404, f"unknown action {action!r}")
    job = await pq.get_job_by_id(job_id)
    if job is None:
        raise Refused(404, f"no job {job_id}")
    verb = pq.delete_job if action == "delete" else getattr(pq, action)
    done: list[int] = await verb(job_id)
    if not done:
        raise Refused(409, f"job {job_id} is {job.state.value}: {action} does not apply")
    return {"id": job_id, "action": action, "done": True}


async def bulk_retry(pq: AsyncPgQueue, body: Mapping[str, Any]) -> dict[str, Any]:
    """Retry the failed and expired jobs matching a filter, in batches of BULK_BATCH (each
    its own transaction), at most BULK_MOST per request; says where to go on from."""
    filters = {k: v for k, v in body.items() if k != "limit"}  # it reads BULK_BATCH a time
    flt = parse_filter(filters, states=[JobState.failed.value, JobState.expired.value])
    if flt["archived"]:
        raise Refused(400, "archived jobs cannot be retried")
    retried = seen = 0
    after = flt["after"]
    more = True
    while seen < BULK_MOST:  # bounded by the jobs read, whatever became of them meanwhile
        page = await _find(pq, flt, BULK_BATCH, after)
        if not page:
            more = False
            break
        retried += len(await pq.retry([j.id for j in page]))
        seen += len(page)
        after = page[-1].id
    return {"retried": retried, "next_after": after if more else None}


async def queue_action(pq: AsyncPgQueue, name: str, action: str) -> dict[str, Any]:
    """Pause, resume or purge a queue; Refused(404) if there is none."""
    if action not in QUEUE_ACTIONS:
        raise Refused(404, f"unknown action {action!r}")
    try:
        if action == "purge":
            if await pq.get_queue(name) is None:
                raise Refused(404, f"no queue {name!r}")
            return {"queue": name, "action": action, "deleted": await pq.purge_queue(name)}
        await (pq.pause_queue if action == "pause" else pq.resume_queue)(name)
    except NotFoundError:
        raise Refused(404, f"no queue {name!r}") from None
    return {"queue": name, "action": action}


def catalogue(pq: AsyncPgQueue) -> list[dict[str, Any]]:
    """Every registered job: description, options, and its data's JSON schema."""
    return [
        {
            "name": d.name,
            "description": d.description,
            "options": d.options,
            "local_concurrency": d.concurrency,
            "takes_data": d.data_param,
            "model": d.data_model.__name__ if d.data_model else None,
            "schema": d.data_model.model_json_schema() if d.data_model else None,
        }
        for d in pq.registry.definitions()
    ]


async def run_job(pq: AsyncPgQueue, name: str, body: object) -> dict[str, Any]:
    """Send a registered job by name with ``body["data"]``, validated by its model first:
    Refused(422) with per-field errors when it does not match, 404 for an unknown name."""
    if name not in pq.registry:
        raise Refused(404, f"no registered job {name!r}")
    if not isinstance(body, dict) or set(body) - {"data"}:
        raise Refused(400, 'the body must be a JSON object {"data": ...}')
    data = body.get("data")
    model = pq.registry[name].data_model
    if model is not None:
        try:
            model.model_validate(data)
        except ValidationError as exc:
            details = [
                {"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]}
                for e in exc.errors()
            ]
            raise Refused(422, f"data does not match {model.__name__}", details) from None
    try:
        handle = await pq.send(name, data)
    except InvalidInputError as exc:
        raise Refused(422, str(exc)) from None
    if handle is None:
        raise Refused(409, f"{name}: not sent (a singleton or policy blocked it)")
    return {"id": int(handle)}


async def schedules(pq: AsyncPgQueue) -> list[dict[str, Any]]:
    """Every schedule with its next slots by the schema's clock."""
    now = await pq.now()
    return [schedule_row(info, now) for info in await pq.get_schedules()]


async def subscriptions(pq: AsyncPgQueue) -> list[dict[str, str]]:
    """Every (event, queue) subscription."""
    return [{"event": e, "queue": q} for e, q in await pq.get_subscriptions()]
