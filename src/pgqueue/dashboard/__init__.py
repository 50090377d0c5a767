"""A web dashboard for pgqueue: queues, jobs, the job catalogue, schedules and
subscriptions, with a JSON API behind it (``pip install 'pgqueue[dashboard]'``).

``create_app(pq, auth=...)`` returns an ASGI app to mount in a Starlette or FastAPI
application; ``pgqueue dashboard APP`` serves one alone. See docs/dashboard.md.
"""

from __future__ import annotations

try:
    import jinja2  # noqa: F401
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "the pgqueue dashboard needs its extra: pip install 'pgqueue[dashboard]'"
    ) from exc

from ._app import create_app
from ._auth import BasicAuth, TokenAuth

__all__ = ["BasicAuth", "TokenAuth", "create_app"]
