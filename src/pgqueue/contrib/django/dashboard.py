"""pgqueue's dashboard (:mod:`pgqueue.dashboard`) beside a Django project, for its staff
only: in ``asgi.py``, ::

    from django.core.asgi import get_asgi_application
    from pgqueue.contrib.django.dashboard import with_dashboard

    application = with_dashboard(get_asgi_application(), path="/pgqueue")

Requests under ``path`` go to the dashboard, the others to Django. A request may in when
Django's session cookie belongs to an active staff user (log in through the admin); a page
asked for without one redirects to ``settings.LOGIN_URL``. Needs ``pgqueue[dashboard]``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from importlib import import_module
from typing import Any
from urllib.parse import quote

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user
from django.db import close_old_connections
from django.http import HttpRequest
from starlette.applications import Starlette
from starlette.requests import HTTPConnection
from starlette.responses import RedirectResponse
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from pgqueue import AsyncPgQueue
from pgqueue.dashboard import create_app

from ._queue import get_queue

__all__ = ["is_staff", "with_dashboard"]


def _staff_session(key: str) -> bool:
    """Whether session ``key`` is an active staff user's (blocking: Django's ORM)."""
    try:
        request = HttpRequest()
        request.session = import_module(settings.SESSION_ENGINE).SessionStore(key)
        user = get_user(request)  # checks the session's hash against the user's password
        return bool(user.is_active and getattr(user, "is_staff", False))
    finally:
        close_old_connections()


async def is_staff(request: HTTPConnection) -> bool:
    """The dashboard's auth: Django's session cookie is an active staff user's.

    Example:
        ```python
        from pgqueue.dashboard import create_app

        # pgqueue's dashboard on its own, in a process that has set Django up, for the
        # staff signed in to the project (its session cookie must reach this app)
        app = create_app(AsyncPgQueue(dsn), auth=is_staff, start_queue=True)
        ```
    """
    key = request.cookies.get(settings.SESSION_COOKIE_NAME)
    if not key:
        return False
    allowed: bool = await sync_to_async(_staff_session)(key)
    return allowed


class _StaffPages:
    """The dashboard, but a page (not the API) asked for without a staff session
    redirects to Django's login. Its routes are the dashboard's, for ``url_for``."""

    def __init__(self, dashboard: Starlette, login: str) -> None:
        self.dashboard = dashboard
        self.login = login

    @property
    def routes(self) -> list[BaseRoute]:
        return self.dashboard.routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") in ("GET", "HEAD"):
            inner = scope["path"][len(scope.get("root_path", "")) :]
            if not inner.startswith("/api/") and not await is_staff(HTTPConnection(scope)):
                target = f"{self.login}?next={quote(scope['path'])}"
                await RedirectResponse(target, 303)(scope, receive, send)
                return
        await self.dashboard(scope, receive, send)


def with_dashboard(
    django_app: ASGIApp | Callable[..., Awaitable[None]],
    *,
    path: str = "/pgqueue",
    login_url: str | None = None,
    **options: Any,
) -> Starlette:
    """An ASGI app serving pgqueue's dashboard under ``path`` to Django's staff, and
    ``django_app`` everywhere else. ``options`` go to :func:`pgqueue.dashboard.create_app`
    (``read_only``, ``title``, ``allowed_hosts`` (default: ``settings.ALLOWED_HOSTS``),
    ...). Its lifespan starts and stops the dashboard's own queue object (an
    AsyncPgQueue on the project's database and schema that knows its jobs).

    Example:
        ```python
        # asgi.py
        django_application = get_asgi_application()  # sets Django up: before pgqueue's imports

        from pgqueue.contrib.django.dashboard import with_dashboard

        application = with_dashboard(django_application, path="/pgqueue", read_only=True)
        ```
    """
    if not path.startswith("/") or path.endswith("/") or len(path) < 2:
        raise ValueError(f"path must start with / and not end with one, got {path!r}")
    queue = get_queue()
    dashboard_queue = AsyncPgQueue(
        queue.current_dsn(), schema=queue.schema, migrate=False, maintenance=False
    )
    dashboard_queue.registry = queue.registry  # the catalogue: its jobs and models
    options.setdefault("allowed_hosts", list(settings.ALLOWED_HOSTS) or None)
    dashboard = create_app(dashboard_queue, auth=is_staff, **options)
    login = login_url or str(settings.LOGIN_URL)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[MutableMapping[str, Any]]:
        await dashboard_queue.start()
        try:
            yield {}
        finally:
            await dashboard_queue.stop()

    return Starlette(
        routes=[Mount(path, app=_StaffPages(dashboard, login)), Mount("/", app=django_app)],
        lifespan=lifespan,
    )
