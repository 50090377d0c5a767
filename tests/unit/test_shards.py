"""Routing queues to shards: exact names, glob patterns in order, the default."""

from __future__ import annotations

import re

import pytest

import pgqueue
from pgqueue._async.shards import route

ROUTES = {"report.daily": "a", "report.*": "b", "*.urgent": "c", "mail": "a"}


@pytest.mark.parametrize(
    ("queue", "shard"),
    [
        ("report.daily", "a"),  # an exact name wins over a pattern that also matches
        ("report.weekly", "b"),
        ("report.urgent", "b"),  # patterns are tried in order: the first match wins
        ("sms.urgent", "c"),
        ("mail", "a"),
        ("mail.urgent", "c"),
        ("other", "default"),
        ("REPORT.x", "default"),  # names are case-sensitive, as queue names are
    ],
)
def test_a_queue_goes_to_its_exact_name_else_the_first_matching_pattern(
    queue: str, shard: str
) -> None:
    assert route(queue, ROUTES, "default") == shard


def test_no_route_and_no_default_is_none() -> None:
    assert route("other", ROUTES, None) is None


def test_shards_refuse_unknown_shards_and_unrouted_queues() -> None:
    a = pgqueue.AsyncPgQueue("postgresql://nowhere/a")
    b = pgqueue.AsyncPgQueue("postgresql://nowhere/b")
    with pytest.raises(
        pgqueue.InvalidOptionError, match=re.escape("'x.*' routes to unknown shard 'z'")
    ):
        pgqueue.AsyncShards({"a": a, "b": b}, {"x.*": "z"})
    with pytest.raises(pgqueue.InvalidOptionError, match="unknown shard 'z'"):
        pgqueue.AsyncShards({"a": a}, default="z")
    with pytest.raises(pgqueue.InvalidOptionError, match="at least one"):
        pgqueue.AsyncShards({})
    with pytest.raises(pgqueue.InvalidOptionError, match="must be an AsyncPgQueue"):
        pgqueue.AsyncShards({"a": pgqueue.PgQueue("postgresql://nowhere/a")})  # type: ignore[dict-item]
    shards = pgqueue.AsyncShards({"a": a, "b": b}, {"x.*": "b"})
    assert shards.names == ["a", "b"]
    assert shards.shard_for("x.1") == "b"
    assert shards.queue_for("x.1") is b
    assert shards["a"] is a
    with pytest.raises(pgqueue.InvalidInputError, match="no shard serves queue 'y'"):
        shards.shard_for("y")
    with pytest.raises(pgqueue.InvalidInputError, match="no shard 'c'"):
        shards["c"]
