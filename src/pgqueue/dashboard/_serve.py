"""``pgqueue dashboard APP``: serve an application's dashboard alone, with uvicorn."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import uvicorn

from .._async.queue import AsyncPgQueue
from .._sync.queue import PgQueue
from ..errors import InvalidInputError
from ._app import create_app
from ._auth import Auth, BasicAuth, TokenAuth

__all__ = ["auth_from_args", "serve"]


def auth_from_args(args: argparse.Namespace) -> Auth | None:
    """The auth the command line asked for (None for --no-auth)."""
    if args.token:
        try:
            return TokenAuth(args.token)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
    if args.basic_auth:
        user, colon, password = args.basic_auth.partition(":")
        if not colon or not user or not password:
            raise InvalidInputError("--basic-auth takes USER:PASS")
        return BasicAuth(user, password)
    return None


def serve(load: Callable[[], AsyncPgQueue | PgQueue], args: argparse.Namespace) -> int:
    """Serve the dashboard of the application ``load`` imports until interrupted."""
    auth = auth_from_args(args)
    if not args.counts_max_age >= 0:
        raise InvalidInputError("--counts-max-age must be 0 or more seconds")
    app = load()
    # An instance of its own on the application's database and schema (or the ones
    # given), knowing the application's jobs: it runs no maintenance and never migrates.
    pq = AsyncPgQueue(
        args.dsn or app.dsn,
        schema=args.schema or app.schema,
        migrate=False,
        maintenance=False,
    )
    pq.registry = app.registry
    dashboard = create_app(
        pq,
        auth=auth,
        allow_anonymous=auth is None,
        read_only=args.read_only,
        title=args.title,
        counts_max_age=args.counts_max_age,
        start_queue=True,
        metrics=args.metrics,
    )
    uvicorn.run(dashboard, host=args.host, port=args.port, log_level="info")
    return 0
