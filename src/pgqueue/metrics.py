"""Prometheus metrics of a queue object: the jobs it sent, the runs of its workers, and how
deep its queues are. Needs the ``metrics`` extra (``pip install 'pgqueue[metrics]'``).

Counters and histograms are kept in this process as sends and runs happen; the gauges of
the queues' depth are read from the database when scraped, at most once per
``stats_every`` seconds (scrapes in between get the last reading). See
docs/observability.md for every metric.

Example:
    ```python
    metrics = pgqueue.metrics.enable(pq)  # its own CollectorRegistry, unless given one
    metrics.serve(9464)  # or pq.work(metrics_port=9464)
    body, content_type = pgqueue.metrics.render(pq)  # for a web app's /metrics
    ```
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

try:
    import prometheus_client  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError("pgqueue.metrics needs its extra: pip install 'pgqueue[metrics]'") from exc

import psycopg
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder, start_http_server
from prometheus_client.registry import Collector

from ._core import Core
from ._executor import Outcome, RunningJob
from ._observe import Observer, WorkerView
from ._sync.runner import connect_options, run_sync
from .errors import InvalidOptionError, PgQueueError
from .models import JobState, QueueStats

__all__ = ["Metrics", "MetricsServer", "asgi_app", "enable", "render"]

log = logging.getLogger("pgqueue.metrics")

# Seconds between two readings of the queues' depth from the database, at most.
STATS_EVERY = 5.0
# Seconds that reading (or connecting for it) may take before it is given up.
_STATS_TIMEOUT = 5
_WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class _Observed(Protocol):
    """The part of a queue object (AsyncPgQueue or PgQueue) that metrics attach to."""

    _core: Core
    _observing: dict[str, Observer]
    _prepare: bool

    @property
    def dsn(self) -> str | None: ...

    def _observe(self, kind: str, observer: Observer) -> Observer: ...


@dataclass(frozen=True, slots=True)
class _QueueMetrics:
    """One queue's counters and histograms, bound to its label once."""

    sent: Any
    started: Any
    completed: Any
    failed: Any
    retried: Any
    expired: Any
    snoozed: Any
    run_seconds: Any
    wait_seconds: Any


class Metrics(Observer):
    """The metrics of one queue object, in ``registry`` (made by :func:`enable`).

    Example:
        ```python
        metrics = pgqueue.metrics.enable(pq)
        server = metrics.serve(9464)
        ...
        server.close()
        ```
    """

    def __init__(
        self,
        core: Core,
        dsn: Callable[[], str | None],
        registry: CollectorRegistry | None = None,
        *,
        stats_every: float = STATS_EVERY,
        prepare: bool = True,
    ) -> None:
        self.registry = CollectorRegistry() if registry is None else registry
        self._lock = threading.Lock()
        self._queues: dict[str, _QueueMetrics] = {}
        self._failing: dict[int, str] = {}  # failed runs not yet recorded: job id -> queue
        self._workers: set[WorkerView] = set()
        registry = self.registry

        def counter(name: str, documentation: str) -> Counter:
            return Counter(name, documentation, ("queue",), registry=registry)

        self._sent = counter("pgqueue_jobs_sent", "Jobs sent by this process")
        self._started = counter("pgqueue_jobs_started", "Runs started")
        self._completed = counter("pgqueue_jobs_completed", "Runs that completed")
        self._failed = counter(
            "pgqueue_jobs_failed", "Runs that failed (or expired) with no retry left"
        )
        self._retried = counter(
            "pgqueue_jobs_retried", "Runs that failed (or expired) and sent their job to retry"
        )
        self._expired = counter("pgqueue_jobs_expired", "Runs that ran past their expire_in")
        self._snoozed = counter("pgqueue_jobs_snoozed", "Runs that snoozed")
        self._run_seconds = Histogram(
            "pgqueue_job_run_seconds", "Seconds a run took", ("queue",), registry=registry
        )
        self._wait_seconds = Histogram(
            "pgqueue_job_wait_seconds",
            "Seconds from when a job could start (start_after, or its sending) to its claim",
            ("queue",),
            buckets=_WAIT_BUCKETS,
            registry=registry,
        )
        self._depth = _DepthCollector(core, dsn, self._workers, stats_every, prepare)
        registry.register(self._depth)

    def close(self) -> None:
        """Close the connection the depth gauges are read on (opened again if scraped)."""
        self._depth.close()

    def serve(self, port: int, host: str = "0.0.0.0") -> MetricsServer:
        """Serve the metrics over HTTP on ``host``:``port`` (0: any free port), from a
        thread of its own, until the returned server is closed."""
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise InvalidOptionError(f"a metrics port is 0 to 65535, got {port!r}")
        try:
            server, thread = start_http_server(port, host, registry=self.registry)
        except (OSError, OverflowError, ValueError) as exc:
            raise PgQueueError(f"cannot serve metrics on {host}:{port}: {exc}") from exc
        served = MetricsServer(server, thread)
        log.info("serving metrics on http://%s:%d/metrics", host, served.port)
        return served

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The metrics in the exposition format ``accept`` (an Accept header) asks for,
        the text format by default: the body and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    # -- the observer ------------------------------------------------------------------------

    def _of(self, name: str) -> _QueueMetrics:
        found = self._queues.get(name)
        if found is None:
            with self._lock:
                found = self._queues.get(name)
                if found is None:
                    found = _QueueMetrics(
                        *(
                            m.labels(name)
                            for m in (
                                self._sent,
                                self._started,
                                self._completed,
                                self._failed,
                                self._retried,
                                self._expired,
                                self._snoozed,
                                self._run_seconds,
                                self._wait_seconds,
                            )
                        )
                    )
                    self._queues[name] = found
        return found

    def send_ended(
        self,
        token: object,
        names: Sequence[str],
        ids: Sequence[int | None],
        error: BaseException | None,
    ) -> None:
        for name, job_id in zip(names, ids, strict=False):
            if job_id is not None:
                self._of(name).sent.inc()

    def worker_started(self, worker: WorkerView) -> None:
        self._workers.add(worker)

    def worker_stopped(self, worker: WorkerView) -> None:
        self._workers.discard(worker)

    def run_started(self, job: RunningJob) -> object:
        queue = self._queues.get(job.name) or self._of(job.name)
        queue.started.inc()
        started, due = job.started_at, job.start_after
        if started is not None and due is not None:
            created = job.created_at
            if created is not None and created > due:
                due = created
            queue.wait_seconds.observe(max((started - due).total_seconds(), 0.0))
        return time.perf_counter()

    def run_ended(self, job: RunningJob, token: object, outcome: Outcome | None) -> None:
        queue = self._queues.get(job.name) or self._of(job.name)
        queue.run_seconds.observe(time.perf_counter() - token)  # type: ignore[operator]
        if outcome is None:
            return
        kind = outcome.kind
        if kind == "completed":
            queue.completed.inc()
        elif kind == "snoozed":
            queue.snoozed.inc()
        else:  # failed or expired: retry or not, the database says once it is recorded
            if kind == "expired":
                queue.expired.inc()
            self._failing[job.id] = job.name

    def failures_written(self, outcomes: Sequence[Outcome], states: dict[int, str]) -> None:
        for outcome in outcomes:
            name = self._failing.pop(outcome.job_id, None)
            state = states.get(outcome.job_id)
            if name is None or state is None:
                continue
            queue = self._of(name)
            (queue.retried if state == "retry" else queue.failed).inc()


class MetricsServer:
    """The HTTP server of :meth:`Metrics.serve`.

    Example:
        ```python
        server = pgqueue.metrics.enable(pq).serve(0)  # any free port
        print(f"http://127.0.0.1:{server.port}/metrics")
        server.close()
        ```
    """

    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.port: int = server.server_address[1]

    def close(self) -> None:
        """Stop serving (idempotent)."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()


class _DepthCollector(Collector):
    """The gauges read when scraped: the jobs of each queue by state and the oldest
    waiting job's age (from the database, at most once per ``every`` seconds), and this
    process's workers and their slots."""

    def __init__(
        self,
        core: Core,
        dsn: Callable[[], str | None],
        workers: set[WorkerView],
        every: float,
        prepare: bool,
    ) -> None:
        self._core = core
        self._dsn = dsn
        self._prepare = prepare
        self._workers = workers
        self._every = every
        self._lock = threading.Lock()
        self._reading: threading.Event | None = None  # set when the reading under way ends
        self._conn: psycopg.Connection[Any] | None = None
        self._read_at = -float("inf")
        self._stats: list[QueueStats] = []

    def describe(self) -> list[Metric]:
        return []  # read at scrape time only: registering reads nothing

    def collect(self) -> Iterator[Metric]:
        workers = list(self._workers)
        yield GaugeMetricFamily(
            "pgqueue_workers", "Workers running in this process", value=len(workers)
        )
        yield GaugeMetricFamily(
            "pgqueue_worker_busy_slots",
            "Runs under way in this process's workers",
            value=sum(w.busy for w in workers),
        )
        yield GaugeMetricFamily(
            "pgqueue_worker_slots",
            "Runs this process's workers may have under way at once (their concurrency)",
            value=sum(w.slots for w in workers),
        )
        stats = self._read()
        jobs = GaugeMetricFamily(
            "pgqueue_queue_jobs", "Jobs in the queue by state", labels=["queue", "state"]
        )
        oldest = GaugeMetricFamily(
            "pgqueue_queue_oldest_waiting_seconds",
            "Age of the queue's oldest job waiting to run (0: none waits)",
            labels=["queue"],
        )
        for queue in stats:
            for state in JobState:
                jobs.add_metric([queue.name, state.value], queue.counts.get(state, 0))
            oldest.add_metric([queue.name], queue.oldest_waiting_seconds or 0.0)
        yield jobs
        yield oldest

    def _read(self) -> list[QueueStats]:
        """The latest reading: a new one when the last is older than ``every``. It is read
        on a thread of its own, one at a time, and a scrape waits for it at most
        _STATS_TIMEOUT seconds (then gets the last one): a database out of reach (packets
        lost, not refused, which no server-side timeout ends) never holds a scrape."""
        with self._lock:
            reading = self._reading
            if reading is None and time.monotonic() - self._read_at >= self._every:
                self._read_at = time.monotonic()
                reading = self._reading = threading.Event()
                threading.Thread(
                    target=self._refresh, args=(reading,), name="pgqueue-metrics", daemon=True
                ).start()
        if reading is not None and not reading.wait(_STATS_TIMEOUT):
            log.warning(
                "reading the queues' depth for metrics takes over %ds: serving the last one",
                _STATS_TIMEOUT,
            )
        return self._stats

    def _refresh(self, done: threading.Event) -> None:
        try:
            stats = self._query()
        except (psycopg.Error, PgQueueError) as exc:
            log.warning("reading the queues' depth for metrics failed: %s", exc)
            self.close()
            stats = []
        with self._lock:
            self._stats = stats
            self._reading = None
        done.set()

    def _query(self) -> list[QueueStats]:
        if self._conn is None or self._conn.closed:
            dsn = self._dsn()
            if dsn is None:
                return []
            self._conn = psycopg.connect(
                dsn,
                connect_timeout=_STATS_TIMEOUT,
                # A connection whose server went silent ends in seconds, not hours.
                keepalives=1,
                keepalives_idle=5,
                keepalives_interval=2,
                keepalives_count=3,
                tcp_user_timeout=_STATS_TIMEOUT * 2000,
                **{**connect_options(dsn, self._prepare), "application_name": "pgqueue-metrics"},
            )
        # The time limit is the transaction's (SET LOCAL): a startup option or a session
        # SET would not pass a pooler in transaction mode, or would stay on its connection.
        with self._conn.transaction():
            self._conn.execute(self._core.sql.timeout_set_local, {"ms": _STATS_TIMEOUT * 1000})
            return run_sync(self._conn, self._core.queue_stats(None))

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def enable(
    pq: _Observed,
    registry: CollectorRegistry | None = None,
    *,
    stats_every: float = STATS_EVERY,
) -> Metrics:
    """Keep metrics of ``pq`` (an AsyncPgQueue or PgQueue) in ``registry``: a registry of
    its own unless given one (``prometheus_client.REGISTRY`` for the process's default).
    Workers that begin afterwards are counted. Called again, returns the same Metrics.

    Example:
        ```python
        from prometheus_client import REGISTRY

        pgqueue.metrics.enable(pq, REGISTRY)  # beside the process's other metrics
        ```
    """
    existing = pq._observing.get("metrics")
    if isinstance(existing, Metrics):
        return existing
    metrics = Metrics(
        pq._core, lambda: pq.dsn, registry, stats_every=stats_every, prepare=pq._prepare
    )
    attached = pq._observe("metrics", metrics)
    assert isinstance(attached, Metrics)
    return attached


def _metrics_of(pq: _Observed | Metrics) -> Metrics:
    if isinstance(pq, Metrics):
        return pq
    found = pq._observing.get("metrics")
    return found if isinstance(found, Metrics) else enable(pq)


def render(pq: _Observed | Metrics, accept: str | None = None) -> tuple[bytes, str]:
    """The metrics of ``pq`` (enabled if they were not), as :meth:`Metrics.render`.

    Example:
        ```python
        @app.get("/metrics")
        def metrics(request: Request) -> Response:
            body, content_type = pgqueue.metrics.render(pq, request.headers.get("accept"))
            return Response(body, media_type=content_type)
        ```
    """
    return _metrics_of(pq).render(accept)


def asgi_app(pq: _Observed | Metrics) -> Callable[..., Any]:
    """An ASGI app that serves the metrics of ``pq`` (enabled if they were not): mount it
    at ``/metrics`` in a Starlette or FastAPI app. Each scrape is rendered on a thread, so
    that reading the queues' depth never holds the app's event loop.

    Example:
        ```python
        app = Starlette(routes=[Mount("/metrics", app=pgqueue.metrics.asgi_app(pq))])
        ```
    """
    metrics = _metrics_of(pq)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":  # served alone: nothing to start or stop
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        accept = dict(scope.get("headers") or []).get(b"accept", b"").decode("latin-1")
        body, content_type = await asyncio.to_thread(metrics.render, accept)
        headers = [(b"content-type", content_type.encode("latin-1"))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app
