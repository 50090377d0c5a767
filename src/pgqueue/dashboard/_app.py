"""The dashboard application: its routes, and the guard every request passes (auth,
read-only mode, CSRF) before any of them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._async.queue import AsyncPgQueue
from ._api import api_routes, error_response, json_response, read_json
from ._auth import (
    SAFE_METHODS,
    TOKEN_COOKIE,
    Auth,
    TokenAuth,
    action_refusal,
    is_allowed,
    set_private_cookie,
)
from ._counts import QueueCounts
from ._pages import page_routes, render
from ._reads import Reads
from ._service import Refused

__all__ = ["LOCAL_HOSTS", "Settings", "create_app"]

# The hosts an anonymous dashboard answers to unless told others: a page of another site
# whose name resolves to this machine (DNS rebinding) sends its own name as Host.
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")

# Sent with every response: no inline script or style runs, no other site frames the pages.
_SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}
# Paths served without signing in: the login page and the static files it uses.
_OPEN_PATHS = ("/login", "/static/")


@dataclass(frozen=True)
class Settings:
    """How one dashboard was created."""

    auth: Auth | None
    read_only: bool
    title: str
    allowed_hosts: tuple[str, ...] | None = None  # None: any Host


def _host_name(header: str | None) -> str | None:
    """The name of a Host header, lowercased, without its port (``[::1]`` for an IPv6
    address); None for a missing or malformed one."""
    text = (header or "").strip().lower()
    if text.startswith("["):
        end = text.find("]")
        name, rest = text[: end + 1], text[end + 1 :]
        if end < 0 or (rest and not rest.startswith(":")):
            return None
        port = rest[1:]
    else:
        name, _, port = text.partition(":")
    if not name or (port and not (port.isascii() and port.isdigit())):
        return None
    return name


def host_allowed(host_header: str | None, allowed: tuple[str, ...] | None) -> bool:
    """Whether a request's Host header (its name, without the port) is one of ``allowed``:
    a name, ``"*"`` for any, or ``"*.example.com"`` for the names under one."""
    if allowed is None or "*" in allowed:
        return True
    host = _host_name(host_header)
    if host is None:
        return False
    return any(
        host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:]))
        for pattern in allowed
    )


class _Guard:
    """ASGI middleware: refuses a request before it reaches a route unless auth lets it in;
    refuses every action (any method but GET and HEAD) in read-only mode, and any action
    that fails the CSRF checks."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        refusal = await self._refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
        else:
            await self.app(scope, receive, send_with_headers)

    async def _refusal(self, scope: Scope) -> Response | None:
        request = Request(scope)
        if not host_allowed(request.headers.get("host"), self.settings.allowed_hosts):
            return error_response(400, "this dashboard does not answer to that Host")
        root = scope.get("root_path", "")
        path = scope["path"][len(root) :] if scope["path"].startswith(root) else scope["path"]
        auth = self.settings.auth
        is_open = path == "/login" or path.startswith(_OPEN_PATHS[1])
        if not is_open and not await is_allowed(auth, request):
            return self._unauthorized(request, path)
        if request.method in SAFE_METHODS:
            return None
        if self.settings.read_only and path != "/login":
            return error_response(403, "the dashboard is read-only")
        reason = action_refusal(auth, request)
        if reason is not None:
            return error_response(403, reason)
        return None

    def _unauthorized(self, request: Request, path: str) -> Response:
        auth = self.settings.auth
        page = request.method in SAFE_METHODS and not path.startswith("/api/")
        if isinstance(auth, TokenAuth) and page:
            return RedirectResponse(str(request.url_for("login_page").path), 303)
        response = error_response(401, "sign in to see the dashboard")
        challenge = getattr(auth, "challenge", None)
        if isinstance(challenge, str):
            response.headers["www-authenticate"] = challenge
        return response


async def _login_page(request: Request) -> Response:
    auth = request.app.state.settings.auth
    return render(request, "login.html", token_auth=isinstance(auth, TokenAuth))


async def _login(request: Request) -> Response:
    """Check a token against TokenAuth and keep it in a cookie for the pages."""
    auth = request.app.state.settings.auth
    if not isinstance(auth, TokenAuth):
        return error_response(404, "this dashboard does not sign in with a token")
    try:
        body = await read_json(request)
    except Refused as exc:
        return error_response(exc.status, exc.message)
    token = body.get("token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not auth.matches(token):
        return error_response(401, "wrong token")
    response = json_response({"url": str(request.url_for("queues_page").path)})
    set_private_cookie(response, request, TOKEN_COOKIE, token)
    return response


def create_app(
    pq: AsyncPgQueue,
    *,
    auth: Auth | None,
    allow_anonymous: bool = False,
    read_only: bool = False,
    title: str = "pgqueue",
    counts_max_age: float = 5.0,
    start_queue: bool = False,
    metrics: bool = False,
    allowed_hosts: list[str] | tuple[str, ...] | None = None,
    read_dsn: str | None = None,
) -> Starlette:
    """The dashboard of ``pq`` as an ASGI application (mount it in a Starlette or FastAPI
    app, or serve it alone).

    ``auth`` is required: :class:`BasicAuth`, :class:`TokenAuth`, or a callable
    ``(request) -> bool`` (or an awaitable of one) that says whether a request may in;
    ``auth=None`` serves everyone, and only together with ``allow_anonymous=True``.
    ``read_only`` refuses every action. The queues' counts are taken at most once per
    ``counts_max_age`` seconds (0: at every request; counting reads the whole job table,
    see docs/dashboard.md). ``start_queue`` starts ``pq`` when the app starts
    and stops it after (for an app served alone; a mounted app's lifespan does not run).
    ``metrics`` serves ``pq``'s Prometheus metrics at ``/metrics`` behind the same auth
    (needs pgqueue[metrics]; see :mod:`pgqueue.metrics`); the app's shutdown closes the
    connection they are read on.
    ``allowed_hosts`` are the names (the Host header without its port) the app answers
    to; any other gets a 400 (``"*"``: any name, ``"*.example.com"``: the names under
    it). None answers to any name, except that an anonymous app (``auth=None``) answers
    only to localhost, 127.0.0.1 and [::1]: a site whose name was made to resolve to
    this machine (DNS rebinding) could otherwise use it as its own.
    ``read_dsn`` sends the pages' and the API's reads to another database holding the same
    schema, a replica (hot standby) of ``pq``'s, opened at the first read and closed when
    the app stops; actions, and the reads they make to decide, stay on ``pq``'s. A replica
    shows what it has replayed: a page may lag an action by the replica's delay.

    Example:
        ```python
        from fastapi import FastAPI
        from pgqueue.dashboard import TokenAuth, create_app

        api = FastAPI()
        api.mount("/admin/queues", create_app(pq, auth=TokenAuth(os.environ["DASHBOARD_TOKEN"])))
        ```
    """
    if auth is None and not allow_anonymous:
        raise ValueError("auth=None serves everyone: pass allow_anonymous=True to mean it")
    if auth is not None and not callable(auth):
        raise TypeError(f"auth must be callable, got {auth!r}")
    if not isinstance(pq, AsyncPgQueue):
        raise TypeError("create_app takes an AsyncPgQueue")
    if isinstance(allowed_hosts, str):
        raise TypeError("allowed_hosts is a list of host names, not one string")
    hosts = None if allowed_hosts is None else tuple(h.lower() for h in allowed_hosts)
    if hosts is None and auth is None:
        hosts = LOCAL_HOSTS
    settings = Settings(auth=auth, read_only=read_only, title=title, allowed_hosts=hosts)
    scrape = []
    closing: list[Callable[[], None]] = []
    if read_dsn is not None and not isinstance(read_dsn, str):
        raise TypeError("read_dsn is a database URL string")
    reads = Reads(pq, read_dsn)
    if metrics:
        from .. import metrics as prometheus  # the metrics extra: imported only when asked

        scrape = [Mount("/metrics", app=prometheus.asgi_app(pq), name="metrics")]
        # Scraping opens a connection of its own to read the queues' depth: closed when
        # the app stops (a mounted app's lifespan does not run: see docs/dashboard.md).
        closing.append(prometheus.enable(pq).close)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            if not start_queue:
                yield
                return
            async with pq:
                yield
        finally:
            for close in closing:
                close()
            await reads.close()

    app = Starlette(
        routes=[
            *scrape,
            *page_routes(),
            Route("/login", _login_page, methods=["GET"], name="login_page"),
            Route("/login", _login, methods=["POST"], name="login"),
            Mount("/api", routes=api_routes(), name="api"),
            Mount(
                "/static",
                app=StaticFiles(directory=Path(__file__).parent / "static"),
                name="static",
            ),
        ],
        middleware=[Middleware(_Guard, settings=settings)],
        lifespan=lifespan,
    )
    app.state.pgqueue = pq
    app.state.settings = settings
    app.state.reads = reads
    app.state.counts = QueueCounts(reads, counts_max_age)
    return app
