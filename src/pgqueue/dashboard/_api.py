"""The JSON API under ``/api``: every read and action of the dashboard, as JSON."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .._async.queue import AsyncPgQueue
from ..errors import InvalidInputError, NotFoundError, PgQueueError
from . import _service as service
from ._counts import QueueCounts
from ._present import dumps
from ._reads import Reads

__all__ = ["MAX_BODY", "api_routes", "error_response", "json_response"]

MAX_BODY = 1_000_000  # bytes of a request body the API reads at most

Endpoint = Callable[[Request], Awaitable[Response]]


def json_response(value: Any, status: int = 200) -> Response:
    """``value`` as a JSON response."""
    return Response(dumps(value), status_code=status, media_type="application/json")


def error_response(
    status: int, message: str, details: list[dict[str, Any]] | None = None
) -> Response:
    """The API's error body: ``{"error": message, "details": [...]}``."""
    return json_response({"error": message, "details": details or []}, status)


def _queue(request: Request) -> AsyncPgQueue:
    pq: AsyncPgQueue = request.app.state.pgqueue
    return pq


async def _reader(request: Request) -> AsyncPgQueue:
    """The queue object reads go through (a replica's, when the app has one)."""
    reads: Reads = request.app.state.reads
    return await reads.get()


def _counts(request: Request) -> QueueCounts:
    counts: QueueCounts = request.app.state.counts
    return counts


async def read_json(request: Request) -> Any:
    """The request's JSON body (None when empty); Refused(400/413) for a bad one."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():  # read no more than MAX_BODY, whatever is sent
        size += len(chunk)
        if size > MAX_BODY:
            raise service.Refused(413, f"the body is larger than {MAX_BODY} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise service.Refused(400, f"the body is not JSON: {str(exc)[:200]}") from None


def endpoint(handler: Callable[[Request], Awaitable[Any]]) -> Endpoint:
    """Wrap ``handler`` (returning a JSON-ready value) into an endpoint that turns refusals
    and pgqueue errors into JSON error responses."""

    async def run(request: Request) -> Response:
        try:
            answer = await handler(request)
            if request.method != "GET":  # an action: the queues' counts have changed
                _counts(request).forget()
            return json_response(answer)
        except service.Refused as exc:
            return error_response(exc.status, exc.message, exc.details)
        except NotFoundError as exc:
            return error_response(404, str(exc))
        except InvalidInputError as exc:
            return error_response(400, str(exc))
        except PgQueueError as exc:
            return error_response(500, str(exc))

    run.__name__ = handler.__name__
    run.__doc__ = handler.__doc__
    return run


@endpoint
async def get_queues(request: Request) -> Any:
    """Every queue: counts per state, limits, paused, last hour's throughput."""
    return {"queues": await service.queues(await _reader(request), _counts(request))}


@endpoint
async def get_queue(request: Request) -> Any:
    """One queue."""
    name = request.path_params["name"]
    (row,) = await service.queues(await _reader(request), _counts(request), name)
    return row


@endpoint
async def post_queue_action(request: Request) -> Any:
    """Pause, resume or purge a queue."""
    p = request.path_params
    return await service.queue_action(_queue(request), p["name"], p["action"])


@endpoint
async def get_jobs(request: Request) -> Any:
    """A page of jobs matching the query's filters."""
    flt = service.parse_filter(request.query_params)
    return await service.list_jobs(await _reader(request), flt)


@endpoint
async def get_job(request: Request) -> Any:
    """One job in full."""
    job_id = service.parse_job_id(request.path_params["id"])
    return await service.get_job(await _reader(request), job_id)


@endpoint
async def post_job_action(request: Request) -> Any:
    """Retry, cancel, resume or delete one job."""
    job_id = service.parse_job_id(request.path_params["id"])
    return await service.job_action(_queue(request), job_id, request.path_params["action"])


@endpoint
async def delete_job(request: Request) -> Any:
    """Delete one job."""
    job_id = service.parse_job_id(request.path_params["id"])
    return await service.job_action(_queue(request), job_id, "delete")


@endpoint
async def post_bulk_retry(request: Request) -> Any:
    """Retry the failed and expired jobs matching the body's filters."""
    body = await read_json(request)
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise service.Refused(400, "the body must be a JSON object of filters")
    return await service.bulk_retry(_queue(request), body)


@endpoint
async def get_catalogue(request: Request) -> Any:
    """Every registered job."""
    return {"jobs": service.catalogue(_queue(request))}


@endpoint
async def post_run(request: Request) -> Any:
    """Send a registered job by name: body ``{"data": ...}``."""
    pq = _queue(request)
    name = request.path_params["name"]
    if name not in pq.registry:
        raise service.Refused(404, f"no registered job {name!r}")
    sent = await service.run_job(pq, name, await read_json(request))
    sent["url"] = request.url_for("job_page", id=str(sent["id"])).path
    return sent


@endpoint
async def get_schedules(request: Request) -> Any:
    """Every schedule and its next slots."""
    return {"schedules": await service.schedules(await _reader(request))}


@endpoint
async def get_subscriptions(request: Request) -> Any:
    """Every subscription."""
    return {"subscriptions": await service.subscriptions(await _reader(request))}


def api_routes() -> list[Route]:
    """The API's routes (mounted under ``/api``)."""
    return [
        Route("/queues", get_queues, methods=["GET"], name="api_queues"),
        # Queue names may hold "/": the action is the last segment.
        Route(
            "/queues/{name:path}/{action}",
            post_queue_action,
            methods=["POST"],
            name="api_queue_action",
        ),
        Route("/queues/{name:path}", get_queue, methods=["GET"], name="api_queue"),
        Route("/jobs", get_jobs, methods=["GET"], name="api_jobs"),
        Route("/jobs/retry", post_bulk_retry, methods=["POST"], name="api_bulk_retry"),
        Route("/jobs/{id}", get_job, methods=["GET"], name="api_job"),
        Route("/jobs/{id}", delete_job, methods=["DELETE"], name="api_job_delete"),
        Route("/jobs/{id}/{action}", post_job_action, methods=["POST"], name="api_job_action"),
        Route("/catalogue", get_catalogue, methods=["GET"], name="api_catalogue"),
        Route("/catalogue/{name:path}/run", post_run, methods=["POST"], name="api_run"),
        Route("/schedules", get_schedules, methods=["GET"], name="api_schedules"),
        Route("/subscriptions", get_subscriptions, methods=["GET"], name="api_subscriptions"),
    ]
