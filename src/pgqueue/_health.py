"""A worker's health endpoint, for a supervisor's probes (Kubernetes' liveness and readiness):
a small HTTP server on the worker's own event loop (the standard library's, no dependency).

``GET /healthz`` answers 200 while the worker is alive, else 503 with what is wrong;
``GET /readyz`` answers 200 once it takes jobs, 503 before and while it stops. Both bodies
are JSON. A probe costs no statement: the worker reports what its own work has seen.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidOptionError, WorkerError

__all__ = ["HealthReport", "HealthServer", "check_port", "serve_health"]

log = logging.getLogger("pgqueue.worker")
# Seconds a probe's connection may take to send its request, and the request's size cap.
_READ_TIMEOUT = 5.0
_MAX_REQUEST = 8192
# Probe connections held at once: past it the oldest is dropped, so that clients that
# connect and stay silent cannot take the file descriptors the worker's own connections need,
# and a new probe is still answered.
_MAX_PROBES = 32


@dataclass
class HealthReport:
    """What the worker says of itself when asked."""

    worker: str
    started: bool
    stopping: bool
    problems: list[str] = field(default_factory=list)  # empty while alive
    details: dict[str, Any] = field(default_factory=dict)

    def live(self) -> tuple[int, dict[str, Any]]:
        ok = not self.problems
        body = {"status": "ok" if ok else "unhealthy", "worker": self.worker, **self.details}
        if not ok:
            body["problems"] = self.problems
        return (200 if ok else 503), body

    def ready(self) -> tuple[int, dict[str, Any]]:
        if not self.started:
            status = "starting"
        elif self.stopping:
            status = "stopping"
        else:
            status = "ready"
        return (200 if status == "ready" else 503), {"status": status, "worker": self.worker}


def check_port(name: str, port: object) -> int:
    """``port`` if it is a TCP port (0 for any free one), else InvalidOptionError."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise InvalidOptionError(f"{name} is a port from 0 to 65535, got {port!r}")
    return port


class HealthServer:
    """The listening endpoint: :meth:`close` ends it and every probe still connected."""

    def __init__(self, report: Callable[[], HealthReport]) -> None:
        self._report = report
        self._server: asyncio.AbstractServer | None = None
        self._answering: dict[asyncio.Task[None], None] = {}  # (ordered: oldest first)
        self._dropped: set[asyncio.Task[None]] = set()  # cancelled for newer ones, ending

    async def close(self) -> None:
        """Stop listening and drop the probes under way (a silent one would otherwise hold
        the worker's stop for its read timeout). Idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._answering):
            task.cancel()
        await asyncio.gather(*self._answering, *self._dropped, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._answering) >= _MAX_PROBES:
            oldest = next(iter(self._answering))
            del self._answering[oldest]  # (uncounted at once: a burst drops as many)
            self._dropped.add(oldest)
            oldest.cancel()
        self._answering[task] = None
        try:
            status, body = await _respond(reader, self._report)
            payload = json.dumps(body).encode() + b"\n"
            reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
            writer.write(
                f"HTTP/1.1 {status} {reason.get(status, 'Service Unavailable')}\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n"
                "Cache-Control: no-store\r\n"
                "Connection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (OSError, asyncio.TimeoutError):  # the prober went away: nothing to tell it
            pass
        except asyncio.CancelledError:  # the endpoint closes, or drops this probe for a new one
            writer.transport.abort()
            raise
        except Exception:  # a bug here must not end the worker: the probe sees no answer
            log.exception("the health endpoint failed to answer")
        finally:
            self._answering.pop(task, None)
            self._dropped.discard(task)
            writer.close()


async def serve_health(host: str, port: int, report: Callable[[], HealthReport]) -> HealthServer:
    """Listen on ``host``:``port`` and answer probes from ``report()`` until closed;
    WorkerError if the address cannot be had (in use, not this machine's)."""
    served = HealthServer(report)
    try:
        server = await asyncio.start_server(served._answer, host, port)
    except (OSError, OverflowError, ValueError) as exc:
        raise WorkerError(f"cannot serve health checks on {host}:{port}: {exc}") from exc
    served._server = server
    bound = server.sockets[0].getsockname()[1] if server.sockets else port
    log.info("serving health checks on http://%s:%d/healthz and /readyz", host, bound)
    return served


async def _respond(
    reader: asyncio.StreamReader, report: Callable[[], HealthReport]
) -> tuple[int, dict[str, Any]]:
    """The status and body for the request ``reader`` brings."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT)
    except asyncio.LimitOverrunError:
        return 400, {"error": "request too large"}
    except asyncio.IncompleteReadError:
        return 400, {"error": "incomplete request"}
    if len(head) > _MAX_REQUEST:
        return 400, {"error": "request too large"}
    parts = head.split(b"\r\n", 1)[0].split()
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return 400, {"error": "not an HTTP request"}
    method, target = parts[0], parts[1].split(b"?", 1)[0]
    if target not in (b"/healthz", b"/readyz"):
        return 404, {"error": "not found: try /healthz or /readyz"}
    if method != b"GET":
        return 405, {"error": "only GET"}
    current = report()
    return current.live() if target == b"/healthz" else current.ready()
