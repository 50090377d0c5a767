"""OpenTelemetry traces of a queue object: a span for each send, and one for each run that
continues the trace the job was sent in. Needs the ``tracing`` extra
(``pip install 'pgqueue[tracing]'``, which brings opentelemetry-api; the application sets
up the SDK and its exporter as usual).

A send (``send``, ``send_after``, ``upsert``, ``insert``, ``send_flow``, with ``conn=`` too)
runs in a PRODUCER span ``send <queue>`` whose context (W3C ``traceparent`` and
``tracestate``) is stored in each job's ``trace`` column; a worker runs each job in a
CONSUMER span ``run <queue>`` whose parent is that send span. See docs/observability.md.

Example:
    ```python
    pgqueue.tracing.instrument(pq)  # before sending, and before work()
    ```
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

try:
    import opentelemetry.trace  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError("pgqueue.tracing needs its extra: pip install 'pgqueue[tracing]'") from exc

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ._core import Core
from ._executor import Outcome, RunningJob
from ._observe import Observer
from ._version import VERSION

__all__ = ["Tracing", "instrument"]

_SYSTEM = "pgqueue"
# Parent contexts kept, by the headers they were read from: the jobs of one insert share
# their send's, so each run need not parse it again. Cleared when full.
_PARENTS_KEPT = 1024


class _Observed(Protocol):
    """The part of a queue object (AsyncPgQueue or PgQueue) that tracing attaches to."""

    _core: Core
    _observing: dict[str, Observer]

    def _observe(self, kind: str, observer: Observer) -> Observer: ...


class Tracing(Observer):
    """Makes the spans of one queue object's sends and runs (see :func:`instrument`).

    Example:
        ```python
        tracing = pgqueue.tracing.instrument(pq)
        ```
    """

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        self._tracer = trace.get_tracer("pgqueue", VERSION, tracer_provider=tracer_provider)
        self._propagator = TraceContextTextMapPropagator()
        self._parents: dict[tuple[str | None, str | None], otel_context.Context] = {}
        # The last span injected and its headers: an insert's jobs share them.
        self._injected: tuple[object, dict[str, str] | None] = (None, None)

    def carrier(self) -> dict[str, str] | None:
        """The current trace context as W3C headers (None when no span is recording)."""
        span = trace.get_current_span()
        last, headers = self._injected
        if span is not last:
            headers = {}
            self._propagator.inject(headers)
            headers = headers or None
            self._injected = (span, headers)
        return headers

    def send_started(self, names: Sequence[str]) -> object:
        queues = sorted(set(names))
        attributes: dict[str, Any] = {
            "messaging.system": _SYSTEM,
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
        }
        if len(queues) == 1:
            attributes["messaging.destination.name"] = queues[0]
        if len(names) != 1:
            attributes["messaging.batch.message_count"] = len(names)
        span = self._tracer.start_span(
            f"send {queues[0]}" if len(queues) == 1 else "send",
            kind=SpanKind.PRODUCER,
            attributes=attributes,
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        return span, token

    def send_ended(
        self,
        token: object,
        names: Sequence[str],
        ids: Sequence[int | None],
        error: BaseException | None,
    ) -> None:
        assert isinstance(token, tuple)
        span, attached = token
        assert isinstance(span, Span)
        otel_context.detach(attached)
        self._injected = (None, None)  # the span ends: let it go
        sent = [str(i) for i in ids if i is not None]
        if len(names) == 1 and sent:
            span.set_attribute("messaging.message.id", sent[0])
        elif sent:
            span.set_attribute("pgqueue.job_ids", sent)
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.end()

    def run_started(self, job: RunningJob) -> object:
        # The sender's context when the job carries one; else a root span (not a child of
        # whatever the worker's task happens to hold).
        carrier = _headers(job.trace)
        key = (carrier.get("traceparent"), carrier.get("tracestate"))
        parent = self._parents.get(key)
        if parent is None:
            if len(self._parents) >= _PARENTS_KEPT:
                self._parents.clear()
            parent = self._propagator.extract(carrier, context=otel_context.Context())
            self._parents[key] = parent
        span = self._tracer.start_span(
            f"run {job.name}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": _SYSTEM,
                "messaging.operation.type": "process",
                "messaging.operation.name": "run",
                "messaging.destination.name": job.name,
                "messaging.message.id": str(job.id),
                "pgqueue.job.attempt": job.attempt,
            },
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        return span, token

    def run_ended(self, job: RunningJob, token: object, outcome: Outcome | None) -> None:
        assert isinstance(token, tuple)
        span, attached = token
        assert isinstance(span, Span)
        otel_context.detach(attached)
        kind = "interrupted" if outcome is None else outcome.kind
        span.set_attribute("pgqueue.job.outcome", kind)
        if outcome is not None and kind in ("failed", "expired"):
            error = _error(outcome.output)
            event = {
                "exception.type": str(error.get("type", kind)),
                "exception.message": str(error.get("message", "")),
            }
            if isinstance(error.get("traceback"), str):
                event["exception.stacktrace"] = error["traceback"]
            span.add_event("exception", event)
            span.set_status(
                Status(StatusCode.ERROR, f"{event['exception.type']}: {event['exception.message']}")
            )
        span.end()


def _headers(stored: object) -> dict[str, str]:
    """The W3C headers a job's ``trace`` holds; none from anything else (a row written by
    hand): its run then starts a trace of its own."""
    if not isinstance(stored, dict):
        return {}
    return {k: v for k, v in stored.items() if k in _HEADERS and isinstance(v, str)}


_HEADERS = ("traceparent", "tracestate")


def _error(output: str | None) -> dict[str, Any]:
    """The error a failed outcome stores: {type, message, traceback}."""
    try:
        error = json.loads(output or "null")
    except ValueError:
        error = output
    return error if isinstance(error, dict) else {"message": error}


def instrument(pq: _Observed, tracer_provider: TracerProvider | None = None) -> Tracing:
    """Trace the sends of ``pq`` (an AsyncPgQueue or PgQueue) and the runs of its workers
    that begin afterwards, with ``tracer_provider`` (the global one by default). Called
    again, returns the same Tracing.

    Example:
        ```python
        from opentelemetry.sdk.trace import TracerProvider

        pgqueue.tracing.instrument(pq, TracerProvider())  # before sending and before work()
        ```
    """
    existing = pq._observing.get("tracing")
    if isinstance(existing, Tracing):
        return existing
    tracing = pq._observe("tracing", Tracing(tracer_provider))
    assert isinstance(tracing, Tracing)
    pq._core.trace_context = tracing.carrier
    return tracing
