"""Who may see the dashboard, and which requests may change anything: the auth the
operator chose, read-only mode, and the CSRF checks every action passes."""

from __future__ import annotations

import base64
import binascii
import hmac
import inspect
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection
from starlette.responses import Response

__all__ = [
    "CSRF_COOKIE",
    "CSRF_HEADER",
    "Auth",
    "BasicAuth",
    "TokenAuth",
    "action_refusal",
    "is_allowed",
    "new_csrf_token",
    "set_private_cookie",
]

Auth = Callable[[HTTPConnection], "bool | Awaitable[bool]"]

CSRF_COOKIE = "pgqueue_csrf"
CSRF_HEADER = "x-csrf-token"
TOKEN_COOKIE = "pgqueue_token"
# Methods that only read: every other one is an action.
SAFE_METHODS = frozenset({"GET", "HEAD"})


class BasicAuth:
    """HTTP basic authentication with one user name and password (compared in constant
    time); browsers ask for them. Serve the dashboard over HTTPS: basic auth sends the
    password with every request.

    Example:
        ```python
        app = create_app(pq, auth=BasicAuth("admin", os.environ["DASHBOARD_PASSWORD"]))
        ```
    """

    challenge = 'Basic realm="pgqueue", charset="UTF-8"'

    def __init__(self, username: str, password: str) -> None:
        if not username or not password:
            raise ValueError("BasicAuth needs a user name and a password")
        self._expected = f"{username}:{password}".encode()

    def __call__(self, request: HTTPConnection) -> bool:
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(given, self._expected)


class TokenAuth:
    """A shared secret token, sent as ``Authorization: Bearer <token>`` (API clients) or
    kept in a cookie after signing in on the dashboard's login page (browsers); compared in
    constant time.

    Example:
        ```python
        app = create_app(pq, auth=TokenAuth(os.environ["DASHBOARD_TOKEN"]), read_only=True)
        ```
    """

    challenge = 'Bearer realm="pgqueue"'

    def __init__(self, token: str) -> None:
        if len(token) < 8:
            raise ValueError("TokenAuth needs a token of at least 8 characters")
        self._token = token.encode()

    def matches(self, given: str) -> bool:
        """Whether ``given`` is the token."""
        return hmac.compare_digest(given.encode(), self._token)

    def __call__(self, request: HTTPConnection) -> bool:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            return self.matches(given.strip())
        return self.matches(request.cookies.get(TOKEN_COOKIE, ""))


async def is_allowed(auth: Auth | None, request: HTTPConnection) -> bool:
    """Whether ``auth`` lets the request in (None: anonymous access was allowed)."""
    if auth is None:
        return True
    verdict = auth(request)
    if inspect.isawaitable(verdict):
        verdict = await verdict
    return verdict is True


def set_private_cookie(response: Response, request: HTTPConnection, name: str, value: str) -> None:
    """Set a cookie only the dashboard's own pages send back and no script reads: for
    its mount path, HttpOnly, SameSite=Strict, and Secure over https."""
    response.set_cookie(
        name,
        value,
        path=(request.scope.get("root_path") or "") + "/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def new_csrf_token() -> str:
    """A fresh per-session token for the double-submit cookie."""
    return secrets.token_urlsafe(32)


def _bearer_only(auth: Auth | None, request: HTTPConnection) -> bool:
    """A request authenticated by a bearer header alone carries no ambient credential a
    cross-site page could make a browser send, so it needs no CSRF token."""
    scheme = request.headers.get("authorization", "").partition(" ")[0]
    return isinstance(auth, TokenAuth) and scheme.lower() == "bearer"


def action_refusal(auth: Auth | None, request: HTTPConnection) -> str | None:
    """Why an action (any method but GET and HEAD) is refused as a possible cross-site
    request forgery, or None if it may go on."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"cross-site request refused (Sec-Fetch-Site: {site})"
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        if urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower():
            return "cross-origin request refused (Origin does not match Host)"
    elif origin == "null":
        return "request from an opaque origin refused"
    if _bearer_only(auth, request):
        return None
    cookie = request.cookies.get(CSRF_COOKIE, "")
    header = request.headers.get(CSRF_HEADER, "")
    if not cookie or not header or not hmac.compare_digest(cookie.encode(), header.encode()):
        return "missing or wrong CSRF token (send the X-CSRF-Token header)"
    return None
