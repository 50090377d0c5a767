"""The connection budget: how many connections each kind of process holds, the pool options
that bound them, and what a process does when PostgreSQL refuses more connections."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.types.string import TextLoader
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from pgqueue import AsyncPgQueue, JobState, PgQueue, cli
from pgqueue.errors import ConnectError, InvalidOptionError


def labelled(dsn: str) -> tuple[str, str]:
    """``dsn`` with an application_name of its own, and that name."""
    name = f"pgq_{uuid.uuid4().hex[:10]}"
    return make_conninfo(dsn, application_name=name), name


class Peak:
    """Samples, on a thread, how many connections carry an application_name."""

    def __init__(self, dsn: str, name: str) -> None:
        self._conn = psycopg.connect(dsn, autocommit=True)
        self._name = name
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def now(self) -> int:
        row = self._conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [self._name]
        ).fetchone()
        assert row is not None
        return int(row[0])

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            self._stop.wait(0.005)

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._conn.close()


def drained(pq: PgQueue, names: list[str]) -> bool:
    return all(
        s.counts[JobState.completed] > 0 and s.waiting == 0 and s.active == 0
        for s in pq.get_queue_stats()
        if s.name in names
    )


def test_a_producer_holds_at_most_its_pool(dsn: str, schema: str) -> None:
    labelled_dsn, name = labelled(dsn)
    with (
        PgQueue(labelled_dsn, schema=schema, maintenance=False, pool_max_size=3) as pq,
        Peak(dsn, name) as peak,
    ):
        pq.create_queue("q")

        def send() -> None:
            for _ in range(30):
                pq.send("q", {})

        threads = [threading.Thread(target=send) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert pq.get_queue_stats("q")[0].waiting == 240
    assert 1 <= peak.peak <= 3


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_worker_whose_handlers_send_shares_one_pool(dsn: str, schema: str, flavour: str) -> None:
    """The worker's loops and its handlers' sends share one pool of pool_max_size; LISTEN
    takes one connection more (a PgQueue's own pool keeps what it holds, idle)."""
    labelled_dsn, name = labelled(dsn)
    options: dict[str, Any] = {"schema": schema, "pool_max_size": 3, "pool_min_size": 1}
    if flavour == "sync":
        pq = PgQueue(labelled_dsn, **options)

        @pq.job("first")
        def first(data: Any) -> None:
            pq.send("second", {})
            time.sleep(0.002)

        @pq.job("second")
        def second(data: Any) -> None:
            pass

        with pq, Peak(dsn, name) as peak:
            pq.insert([{"name": "first"}] * 300)
            own = peak.now()
            pq.work(until_empty=True, threads=10)
            assert drained(pq, ["first", "second"])
            assert pq.get_queue_stats("second")[0].counts[JobState.completed] == 300
        assert 1 <= own <= 3
        assert own + 2 <= peak.peak <= own + 3 + 1
        return

    apq = AsyncPgQueue(labelled_dsn, **options)

    @apq.job("first")
    async def afirst(data: Any) -> None:
        await apq.send("second", {})
        await asyncio.sleep(0.002)

    @apq.job("second")
    async def asecond(data: Any) -> None:
        pass

    async def main() -> int:
        async with apq:
            await apq.insert([{"name": "first"}] * 300)
            await apq.work(until_empty=True)
            (stats,) = await apq.get_queue_stats("second")
            return stats.counts[JobState.completed]

    with Peak(dsn, name) as peak:
        assert asyncio.run(main()) == 300
    assert 2 <= peak.peak <= 3 + 1


def test_a_null_pool_holds_no_connection_between_uses(dsn: str, schema: str) -> None:
    labelled_dsn, name = labelled(dsn)
    with PgQueue(labelled_dsn, schema=schema, maintenance=False, null_pool=True) as pq:
        pq.create_queue("q")
        for _ in range(10):
            pq.send("q", {})
        with Peak(dsn, name) as peak:
            deadline = time.monotonic() + 10
            while peak.now() and time.monotonic() < deadline:  # closing is asynchronous
                time.sleep(0.01)
            assert peak.now() == 0
        assert pq.get_queue_stats("q")[0].waiting == 10


def test_the_callers_pool_is_used_and_left_open(dsn: str, schema: str) -> None:
    labelled_dsn, name = labelled(dsn)
    with ConnectionPool(labelled_dsn, min_size=2, max_size=2, open=True) as pool:
        with PgQueue(schema=schema, maintenance=False, pool=pool) as pq:
            assert pq.dsn == pool.conninfo
            pq.create_queue("q")
            with pool.connection() as conn:  # the caller's transaction, on its own pool
                pq.send("q", {}, conn=conn)
            assert pq.send("q", {}) is not None
            assert pool.get_stats()["requests_num"] >= 2
            assert pq.get_queue_stats("q")[0].waiting == 2
            with Peak(dsn, name) as peak:  # no pool of pgqueue's own
                assert peak.now() == 2
        assert not pool.closed
        with pool.connection() as conn:
            conn.execute("SELECT 1")


def test_a_pool_that_is_not_open_is_refused_before_anything_is_written(
    dsn: str, schema: str, conn: psycopg.Connection[Any]
) -> None:
    pool: ConnectionPool[Any] = ConnectionPool(dsn, open=False)
    pq = PgQueue(schema=schema, maintenance=False, pool=pool)
    with pytest.raises(InvalidOptionError, match="not open"):
        pq.start()
    assert pool.closed
    assert conn.execute("SELECT to_regnamespace(%s)", [schema]).fetchone() == (None,)


async def test_a_pool_of_the_other_kind_is_refused_on_construction(dsn: str) -> None:
    async with AsyncConnectionPool(dsn, min_size=0, max_size=1, open=False) as apool:
        with pytest.raises(InvalidOptionError, match="ConnectionPool"):
            PgQueue(dsn, pool=apool)  # type: ignore[arg-type]
    with ConnectionPool(dsn, min_size=0, max_size=1, open=True) as pool:
        with pytest.raises(InvalidOptionError, match="AsyncConnectionPool"):
            AsyncPgQueue(dsn, pool=pool)  # type: ignore[arg-type]
        with pytest.raises(InvalidOptionError):
            PgQueue(dsn, pool=dsn)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options",
    [
        {"pool_max_size": 0},
        {"pool_min_size": 3, "pool_max_size": 2},
        {"pool_min_size": -1},
        {"pool_max_size": True},
        {"pool_max_size": 2.5},
        {"null_pool": "yes"},
    ],
)
def test_bad_pool_options_are_refused(dsn: str, options: dict[str, Any]) -> None:
    with pytest.raises(InvalidOptionError):
        PgQueue(dsn, **options)


def test_a_pool_and_a_null_pool_together_are_refused(dsn: str) -> None:
    with (
        ConnectionPool(dsn, min_size=0, max_size=1, open=True) as pool,
        pytest.raises(InvalidOptionError, match="not both"),
    ):
        PgQueue(dsn, pool=pool, null_pool=True)


def test_the_worker_command_sizes_the_applications_pool(dsn: str) -> None:
    app = PgQueue(dsn)
    args = cli.build_parser().parse_args(["worker", "x:pq", "--pool-size", "4"])
    cli._size_pool(app, args)
    assert (app._pool_min_size, app._pool_max_size, app._null_pool) == (1, 4, False)
    args = cli.build_parser().parse_args(["worker", "x:pq", "--pool-size", "1", "--null-pool"])
    cli._size_pool(app, args)
    assert (app._pool_max_size, app._null_pool) == (1, True)
    args = cli.build_parser().parse_args(["worker", "x:pq", "--pool-size", "0"])
    with pytest.raises(InvalidOptionError):
        cli._size_pool(app, args)
    args = cli.build_parser().parse_args(["worker", "x:pq", "--null-pool", "--pool-min-size", "2"])
    with pytest.raises(InvalidOptionError, match="null-pool"):
        cli._size_pool(app, args)
    args = cli.build_parser().parse_args(["worker", "x:pq", "--no-listen", "--listen-dsn", dsn])
    with pytest.raises(InvalidOptionError, match="no-listen"):
        cli._app_connections(app, args)


@pytest.fixture
def limited_role(dsn: str, conn: psycopg.Connection[Any]) -> Iterator[Callable[[int], str]]:
    """A DSN of a role allowed only ``n`` connections (as max_connections would)."""
    role = f"pgq_limited_{uuid.uuid4().hex[:8]}"
    database = conn.info.dbname
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    conn.execute(
        sql.SQL("GRANT CREATE, CONNECT ON DATABASE {} TO {}").format(
            sql.Identifier(database), sql.Identifier(role)
        )
    )

    def limit(n: int) -> str:
        conn.execute(
            sql.SQL("ALTER ROLE {} CONNECTION LIMIT {}").format(
                sql.Identifier(role), sql.Literal(n)
            )
        )
        return make_conninfo(dsn, user=role, application_name=role)

    yield limit
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [role]
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
            return
        except (psycopg.errors.DependentObjectsStillExist, psycopg.errors.ObjectInUse):
            time.sleep(0.05)  # its backends end asynchronously


def test_no_connection_left_gives_one_clear_error(
    limited_role: Callable[[int], str], schema: str
) -> None:
    role_dsn = limited_role(1)
    with psycopg.connect(role_dsn), pytest.raises(ConnectError) as caught:
        PgQueue(role_dsn, schema=schema).start()
    assert "refuses more connections" in str(caught.value)
    assert "pool_max_size" in str(caught.value)


def test_a_pool_minimum_above_the_servers_limit_gives_the_same_clear_error(
    limited_role: Callable[[int], str], schema: str
) -> None:
    role_dsn = limited_role(1)
    pq = PgQueue(role_dsn, schema=schema, pool_min_size=2, connect_timeout=2)
    with pytest.raises(ConnectError, match="refuses more connections"):
        pq.start()


def test_a_worker_short_of_connections_still_drains(
    limited_role: Callable[[int], str], schema: str
) -> None:
    """Allowed three connections, a worker that would open a dozen (pool, LISTEN, its
    handlers' sends) backs off and runs every job on the connections it has."""
    role_dsn = limited_role(3)
    pq = PgQueue(role_dsn, schema=schema, maintenance=False, pool_max_size=10)

    @pq.job("first")
    def first(data: Any) -> None:
        pq.send("second", {})

    @pq.job("second")
    def second(data: Any) -> None:
        pass

    with pq:
        pq.insert([{"name": "first"}] * 200)
        pq.work(until_empty=True, poll_interval=0.2)
        assert drained(pq, ["first", "second"])
        assert pq.get_queue_stats("second")[0].counts[JobState.completed] == 200


async def test_a_callers_connection_that_loads_json_as_text_reads_it_as_pgqueue_does(
    dsn: str, schema: str
) -> None:
    # Django's connections load jsonb as text; pgqueue's plans on them must not.
    with PgQueue(dsn, schema=schema) as pq, psycopg.connect(dsn) as conn:
        conn.adapters.register_loader("jsonb", TextLoader)
        conn.adapters.register_loader("json", TextLoader)
        pq.create_queue("q")
        job_id = pq.send("q", {"a": [1, 2]}, conn=conn)
        assert job_id is not None
        job = pq.get_job_by_id(job_id, conn=conn)
        assert job is not None and job.data == {"a": [1, 2]}
        assert [j.data for j in pq.find_jobs("q", conn=conn)] == [{"a": [1, 2]}]
        (raw,) = conn.execute(sql.SQL("SELECT data FROM {}.job").format(sql.Identifier(schema)))
        assert raw == ('{"a": [1, 2]}',)  # the connection's own queries as it set them
    async with (
        AsyncPgQueue(dsn, schema=schema) as apq,
        await psycopg.AsyncConnection.connect(dsn) as aconn,
    ):
        aconn.adapters.register_loader("jsonb", TextLoader)
        ajob = await apq.get_job_by_id(job_id, conn=aconn)
        assert ajob is not None and ajob.data == {"a": [1, 2]}
