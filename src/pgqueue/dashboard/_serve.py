"""``pgqueue dashboard APP``: serve an application's dashboard alone, with uvicorn."""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Callable

import uvicorn

from .._async.queue import AsyncPgQueue
from .._sync.queue import PgQueue
from ..errors import InvalidInputError
from ._app import LOCAL_HOSTS, create_app
from ._auth import Auth, BasicAuth, TokenAuth

__all__ = ["allowed_hosts_from_args", "auth_from_args", "serve"]


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


def allowed_hosts_from_args(args: argparse.Namespace, anonymous: bool) -> list[str] | None:
    """The Host names the served dashboard answers to: those of --allowed-host; else, when
    it serves anyone (--no-auth), localhost's and the --host it binds, if that is one
    address or name (not 0.0.0.0 or ::); else any (None)."""
    given: list[str] | None = getattr(args, "allowed_host", None)
    if given:
        return list(given)
    if not anonymous:
        return None
    hosts = list(LOCAL_HOSTS)
    bound = (args.host or "").strip().lower()
    try:
        address = ipaddress.ip_address(bound.strip("[]"))
    except ValueError:
        address = None
    if address is not None and address.is_unspecified:
        return hosts
    if address is not None and address.version == 6:
        bound = f"[{address.compressed}]"
    elif address is not None:
        bound = address.compressed
    if bound and bound not in hosts:
        hosts.append(bound)
    return hosts


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
        prepare=app._prepare if args.prepare is None else args.prepare,
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
        allowed_hosts=allowed_hosts_from_args(args, anonymous=auth is None),
        read_dsn=args.read_dsn,
    )
    uvicorn.run(dashboard, host=args.host, port=args.port, log_level="info")
    return 0
