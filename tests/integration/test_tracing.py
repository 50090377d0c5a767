"""OpenTelemetry: a run's span is a child of the span that sent its job (a plain send, a
transactional one, an insert of several), failures are recorded on it, and with tracing
off a job carries no trace context."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import psycopg.sql
import psycopg.types.json
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import pgqueue
import pgqueue.tracing
from pgqueue import AsyncPgQueue, PgQueue


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    found = InMemorySpanExporter()
    yield found
    found.clear()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    made = TracerProvider()
    made.add_span_processor(SimpleSpanProcessor(exporter))
    yield made
    made.shutdown()


def spans(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def assert_child(run: ReadableSpan, send: ReadableSpan) -> None:
    assert run.context is not None and send.context is not None and run.parent is not None
    assert run.context.trace_id == send.context.trace_id
    assert run.parent.span_id == send.context.span_id


def traced_queue(pq: PgQueue, provider: TracerProvider) -> None:
    @pq.job("emails", retry_limit=0)
    def emails(data: dict[str, str]) -> str:
        if data.get("fail"):
            raise RuntimeError("smtp down")
        return "sent"

    pgqueue.tracing.instrument(pq, provider)


def test_the_run_span_is_a_child_of_the_send_span(
    pq: PgQueue, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    traced_queue(pq, provider)
    assert pgqueue.tracing.instrument(pq) is pgqueue.tracing.instrument(pq, provider)
    job_id = pq.send("emails", {"to": "ada"})
    assert job_id is not None
    job = pq.get_job_by_id(job_id)
    assert job is not None and job.trace is not None
    assert set(job.trace) == {"traceparent"}
    pq.work(until_empty=True)
    (send,) = spans(exporter, "send emails")
    (run,) = spans(exporter, "run emails")
    assert send.kind == SpanKind.PRODUCER and run.kind == SpanKind.CONSUMER
    assert_child(run, send)
    assert send.context is not None
    assert job.trace["traceparent"].split("-")[2] == format(send.context.span_id, "016x")
    assert send.attributes is not None and run.attributes is not None
    assert send.attributes["messaging.system"] == "pgqueue"
    assert send.attributes["messaging.destination.name"] == "emails"
    assert send.attributes["messaging.message.id"] == str(job_id)
    assert run.attributes["messaging.message.id"] == str(job_id)
    assert run.attributes["pgqueue.job.attempt"] == 1
    assert run.attributes["pgqueue.job.outcome"] == "completed"
    assert run.status.status_code == StatusCode.UNSET


def test_a_send_joins_the_callers_trace(
    pq: PgQueue, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    traced_queue(pq, provider)
    with provider.get_tracer("app").start_as_current_span("signup"):
        pq.send("emails", {"to": "ada"})
    pq.work(until_empty=True)
    (outer,) = spans(exporter, "signup")
    (send,) = spans(exporter, "send emails")
    (run,) = spans(exporter, "run emails")
    assert_child(send, outer)
    assert_child(run, send)


def test_a_transactional_send_carries_the_context(
    pq: PgQueue, dsn: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    traced_queue(pq, provider)
    with psycopg.connect(dsn) as conn:
        with conn.transaction():
            job_id = pq.send("emails", {"to": "ada"}, conn=conn)
        assert job_id is not None
        rolled_back = pq.send("emails", {"to": "bob"}, conn=conn)
        conn.rollback()  # the caller's transaction fails: no job, its send span remains
    assert rolled_back is not None and pq.get_job_by_id(rolled_back) is None
    pq.work(until_empty=True)
    sends = spans(exporter, "send emails")
    (run,) = spans(exporter, "run emails")
    assert len(sends) == 2
    (sent,) = [
        s for s in sends if s.attributes and s.attributes["messaging.message.id"] == str(job_id)
    ]
    assert_child(run, sent)


def test_an_insert_of_several_jobs_is_one_send_span(
    pq: PgQueue, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    traced_queue(pq, provider)
    ids = pq.insert([{"name": "emails", "data": {"to": str(i)}} for i in range(3)])
    pq.work(until_empty=True)
    (send,) = spans(exporter, "send emails")
    runs = spans(exporter, "run emails")
    assert len(runs) == 3
    for run in runs:
        assert_child(run, send)
    assert send.attributes is not None
    assert send.attributes["messaging.batch.message_count"] == 3
    assert send.attributes["pgqueue.job_ids"] == tuple(str(i) for i in ids)


def test_a_failure_is_recorded_on_the_run_span(
    pq: PgQueue, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    traced_queue(pq, provider)
    pq.send("emails", {"fail": "yes"})
    pq.work(until_empty=True)
    (run,) = spans(exporter, "run emails")
    assert run.status.status_code == StatusCode.ERROR
    assert run.status.description == "RuntimeError: smtp down"
    assert run.attributes is not None and run.attributes["pgqueue.job.outcome"] == "failed"
    (event,) = [e for e in run.events if e.name == "exception"]
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "RuntimeError"
    assert event.attributes["exception.message"] == "smtp down"
    assert "smtp down" in str(event.attributes["exception.stacktrace"])


def test_a_refused_send_is_recorded_on_its_span(
    pq: PgQueue, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    traced_queue(pq, provider)
    with pytest.raises(pgqueue.QueueNotFoundError):
        pq.send("nowhere")
    (send,) = spans(exporter, "send nowhere")
    assert send.status.status_code == StatusCode.ERROR


def test_tracing_off_leaves_the_trace_empty(pq: PgQueue) -> None:
    @pq.job("emails")
    def emails(data: None) -> None:
        pass

    job_id = pq.send("emails")
    (inserted,) = pq.insert([{"name": "emails"}])
    pq.work(until_empty=True)
    for found in (job_id, inserted):
        assert found is not None
        job = pq.get_job_by_id(found)
        assert job is not None and job.trace is None


def test_a_job_sent_without_a_context_runs_in_a_root_span(
    pq: PgQueue, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    @pq.job("emails")
    def emails(data: None) -> None:
        pass

    pq.send("emails")  # before tracing was on
    pgqueue.tracing.instrument(pq, provider)
    pq.work(until_empty=True)
    (run,) = spans(exporter, "run emails")
    assert run.parent is None


async def test_an_async_handlers_spans_are_children_of_its_run(
    apq: AsyncPgQueue, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracer = provider.get_tracer("handler")

    @apq.job("fetch")
    async def fetch(data: None) -> None:
        with tracer.start_as_current_span("http get"):
            pass

    pgqueue.tracing.instrument(apq, provider)
    await apq.send("fetch")
    await apq.work(until_empty=True)
    (send,) = spans(exporter, "send fetch")
    (run,) = spans(exporter, "run fetch")
    (inner,) = spans(exporter, "http get")
    assert_child(run, send)
    assert_child(inner, run)


def test_spans_a_handler_starts_are_children_of_its_run_span(
    pq: PgQueue, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracer = provider.get_tracer("app")

    @pq.job("sync_work")
    def sync_work(data: None) -> None:  # on a thread of its own
        with tracer.start_as_current_span("inside sync"):
            pass

    @pq.job("async_work")
    async def async_work(data: None) -> None:
        with tracer.start_as_current_span("inside async"):
            pass

    pgqueue.tracing.instrument(pq, provider)
    pq.send("sync_work", None)
    pq.send("async_work", None)
    pq.work(until_empty=True)
    for kind in ("sync", "async"):
        (run,) = spans(exporter, f"run {kind}_work")
        (inner,) = spans(exporter, f"inside {kind}")
        assert run.context is not None and inner.parent is not None
        assert inner.parent.span_id == run.context.span_id


def test_a_publish_inside_a_span_carries_its_context(
    pq: PgQueue, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    @pq.job("audit")
    def audit(data: dict[str, str]) -> None:
        pass

    pgqueue.tracing.instrument(pq, provider)
    pq.subscribe("user.created", "audit")
    with provider.get_tracer("app").start_as_current_span("signup") as signup:
        [job_id] = pq.publish("user.created", {"user": "ada"})
    job = pq.get_job_by_id(job_id)
    assert job is not None and job.trace is not None
    pq.work(until_empty=True)
    (run,) = spans(exporter, "run audit")
    assert run.parent is not None and run.parent.span_id == signup.get_span_context().span_id


def test_a_trace_column_holding_garbage_starts_a_trace_of_its_own(
    pq: PgQueue, provider: TracerProvider, exporter: InMemorySpanExporter, dsn: str, schema: str
) -> None:
    traced_queue(pq, provider)
    stored = [42, "x" * 1000, [1, 2], {"traceparent": 5}, {"traceparent": "zzz"}]
    ids = [pq.send("emails", {"to": str(n)}) for n in range(len(stored))]
    with psycopg.connect(dsn, autocommit=True) as conn:
        for job_id, value in zip(ids, stored, strict=True):
            conn.execute(
                psycopg.sql.SQL("UPDATE {}.job SET trace = %s WHERE id = %s").format(
                    psycopg.sql.Identifier(schema)
                ),
                (psycopg.types.json.Jsonb(value), job_id),
            )
    pq.work(until_empty=True)
    runs = spans(exporter, "run emails")
    assert len(runs) == len(stored) and all(run.parent is None for run in runs)
    assert all(
        (job := pq.get_job_by_id(i or 0)) and job.state is pgqueue.JobState.completed for i in ids
    )
