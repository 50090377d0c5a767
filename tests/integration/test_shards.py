"""Shards: queues routed to two databases, sent through the router, each shard drained by
its own worker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import conninfo, sql

import pgqueue


@pytest.fixture
def other_dsn(dsn: str) -> Iterator[str]:
    """A second database on the test server, dropped afterwards."""
    name = f"t_shard_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield conninfo.make_conninfo(dsn, dbname=name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _counts(dsn: str, schema: str) -> dict[str, int]:
    query = sql.SQL("SELECT name, count(*) FROM {}.job GROUP BY name").format(
        sql.Identifier(schema)
    )
    with psycopg.connect(dsn) as conn:
        return {name: count for name, count in conn.execute(query).fetchall()}


async def test_jobs_are_sent_to_their_shard_and_each_shard_drains_its_own(
    dsn: str, other_dsn: str, schema: str
) -> None:
    a = pgqueue.AsyncPgQueue(dsn, schema=schema, maintenance=False)
    b = pgqueue.AsyncPgQueue(other_dsn, schema=schema, maintenance=False)
    shards = pgqueue.AsyncShards({"a": a, "b": b}, {"report.*": "b"}, default="a")
    done: list[tuple[str, Any]] = []

    @shards.job("mail")
    async def mail(data: Any) -> None:
        done.append(("mail", data))

    @shards.job("report.daily")
    async def report(data: Any) -> None:
        done.append(("report.daily", data))

    async with shards:
        first = await shards.send("mail", 1)
        other = await shards.send("report.daily", 2)
        assert first is not None and other is not None
        sent = await shards.insert(
            [{"name": "report.daily", "data": 3}, {"name": "mail", "data": 4, "priority": 5}]
        )
        assert [shard for shard, _ in sent] == ["b", "a"]
        assert _counts(dsn, schema) == {"mail": 2}
        assert _counts(other_dsn, schema) == {"report.daily": 2}
        # Each database numbers its own jobs: the same id names two jobs, one per shard.
        assert int(first) == int(other)
        job = await shards.get_job("report.daily", int(other))
        assert job is not None and job.data == 2 and job.name == "report.daily"
        mail_job = await shards.get_job("mail", int(first))
        assert mail_job is not None and mail_job.data == 1
        # The id is shard a's job of queue "mail": asked for under another queue of
        # shard a, there is none.
        assert await shards.get_job("other", int(first)) is None

        await shards["b"].work(until_empty=True)  # a worker of shard b runs only b's jobs
        assert sorted(done) == [("report.daily", 2), ("report.daily", 3)]
        await shards["a"].work(until_empty=True)
        assert sorted(done, key=str) == sorted(
            [("mail", 1), ("mail", 4), ("report.daily", 2), ("report.daily", 3)], key=str
        )
        for queue in (a, b):
            stats = {s.name: s.counts for s in await queue.get_queue_stats()}
            assert all(c[pgqueue.JobState.completed] == 2 for c in stats.values()), stats


@pytest.mark.parametrize("shards", [{}, [], None, "a"])
def test_shards_must_be_a_mapping_of_queue_objects(shards: Any) -> None:
    with pytest.raises(pgqueue.InvalidOptionError):
        pgqueue.Shards(shards)


def test_a_bad_job_in_a_batch_writes_to_no_shard(dsn: str, schema: str) -> None:
    other = f"{schema}_b"
    try:
        with pgqueue.Shards(
            {
                "a": pgqueue.PgQueue(dsn, schema=schema, maintenance=False),
                "b": pgqueue.PgQueue(dsn, schema=other, maintenance=False),
            },
            {"b.*": "b"},
            default="a",
        ) as shards:
            assert shards.create_queue("x") and shards.create_queue("b.y")
            with pytest.raises(pgqueue.InvalidOptionError):
                shards.insert([{"name": "x"}, {"name": "b.y", "priority": "high"}])
            with pytest.raises(pgqueue.InvalidInputError, match="job #1"):
                shards.insert([{"name": "x"}, {"data": 1}])
            assert _counts(dsn, schema) == {}
            assert _counts(dsn, other) == {}
            ids = shards.insert([{"name": "x"}, {"name": "b.y"}, {"name": "x"}])
            assert [s for s, _ in ids] == ["a", "b", "a"]
            assert _counts(dsn, schema) == {"x": 2}
            assert _counts(dsn, other) == {"b.y": 1}
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(other)))
