"""The HTML pages: server-rendered from the same functions as the JSON API."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from .._async.queue import AsyncPgQueue
from ..errors import PgQueueError
from . import _service as service
from ._auth import CSRF_COOKIE, new_csrf_token, set_private_cookie
from ._present import STATES, chart_bars, dumps
from ._reads import Reads

__all__ = ["page_routes", "render", "segment"]

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,  # everything a job holds is shown as text, never as markup
)
_ENV.filters["json"] = lambda value: dumps(value, indent=2)
_ENV.globals["chart_bars"] = chart_bars


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


_ENV.filters["age"] = _age
# Names in a query string are encoded whole too ("/" and all), like path segments.
_ENV.filters["segment"] = lambda value: quote(str(value), safe="")


def segment(value: object) -> str:
    """``value`` as one percent-encoded path segment (no "/" left in it)."""
    return quote(str(value), safe="")


def render(request: Request, template: str, status: int = 200, **context: Any) -> Response:
    """A page, with the per-session CSRF token its actions send (set as a cookie if new)."""
    token = request.cookies.get(CSRF_COOKIE) or new_csrf_token()
    settings = request.app.state.settings

    def path(route: str, /, **params: Any) -> str:
        # Each parameter (a queue or job name may hold "/" and "..") is one path segment,
        # percent-encoded whole: a browser resolves "z/../ok" to "ok", but never
        # "z%2F..%2Fok". The server decodes it back, and the routes whose names may hold
        # "/" take the whole rest of the path but the last segment.
        return str(request.url_for(route, **{k: segment(v) for k, v in params.items()}).path)

    html = _ENV.get_template(template).render(
        request=request,
        path=path,
        title=settings.title,
        read_only=settings.read_only,
        csrf_token=token,
        states=STATES,
        **context,
    )
    response = HTMLResponse(html, status_code=status)
    if request.cookies.get(CSRF_COOKIE) != token:
        set_private_cookie(response, request, CSRF_COOKIE, token)
    return response


def _queue(request: Request) -> AsyncPgQueue:
    pq: AsyncPgQueue = request.app.state.pgqueue
    return pq


async def _reader(request: Request) -> AsyncPgQueue:
    """The queue object the pages read through (a replica's, when the app has one)."""
    reads: Reads = request.app.state.reads
    return await reads.get()


def _error_page(request: Request, exc: service.Refused) -> Response:
    return render(request, "error.html", status=exc.status, message=exc.message)


async def queues_page(request: Request) -> Response:
    """Every queue: counts, throughput chart, limits, actions."""
    rows = await service.queues(await _reader(request), request.app.state.counts)
    return render(request, "queues.html", queues=rows)


async def jobs_page(request: Request) -> Response:
    """Jobs by queue and state, with filters and keyset pagination."""
    try:
        flt = service.parse_filter(request.query_params)
        page = await service.list_jobs(await _reader(request), flt)
    except service.Refused as exc:
        return _error_page(request, exc)
    except PgQueueError as exc:
        return _error_page(request, service.Refused(400, str(exc)))
    params = {k: v for k, v in request.query_params.items() if k != "after" and v}
    next_url = None
    if page["next_after"] is not None:
        next_url = "?" + urlencode({**params, "after": page["next_after"]})
    first_url = "?" + urlencode(params) if flt["after"] else None
    queues = [q.name for q in await (await _reader(request)).get_queues()]
    return render(
        request,
        "jobs.html",
        jobs=page["jobs"],
        filters=request.query_params,
        state_filter=flt["state"] or [],
        next_url=next_url,
        first_url=first_url,
        queue_names=queues,
    )


async def job_page(request: Request) -> Response:
    """One job: data, output, progress (live), errors, logs, parents and children."""
    try:
        job_id = service.parse_job_id(request.path_params["id"])
        job = await service.get_job(await _reader(request), job_id)
    except service.Refused as exc:
        return _error_page(request, exc)
    return render(request, "job.html", job=job)


async def catalogue_page(request: Request) -> Response:
    """Every registered job, and a form to run one by name."""
    return render(request, "catalogue.html", jobs=service.catalogue(_queue(request)))


async def schedules_page(request: Request) -> Response:
    """Every schedule and its next slots."""
    return render(
        request, "schedules.html", schedules=await service.schedules(await _reader(request))
    )


async def subscriptions_page(request: Request) -> Response:
    """Every subscription."""
    rows = await service.subscriptions(await _reader(request))
    return render(request, "subscriptions.html", subscriptions=rows)


def page_routes() -> list[Route]:
    """The pages' routes."""
    return [
        Route("/", queues_page, methods=["GET"], name="queues_page"),
        Route("/jobs", jobs_page, methods=["GET"], name="jobs_page"),
        Route("/jobs/{id}", job_page, methods=["GET"], name="job_page"),
        Route("/catalogue", catalogue_page, methods=["GET"], name="catalogue_page"),
        Route("/schedules", schedules_page, methods=["GET"], name="schedules_page"),
        Route("/subscriptions", subscriptions_page, methods=["GET"], name="subscriptions_page"),
    ]
