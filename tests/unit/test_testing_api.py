"""pgqueue.testing's surface, and the parts of it that need no database."""

from __future__ import annotations

import inspect
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from pydantic import BaseModel

import pgqueue
from pgqueue import JobState
from pgqueue import testing as pgtesting
from pgqueue.testing import Drained, Run, matches


def test_all_is_the_modules_public_names_and_its_errors_are_pgqueues() -> None:
    offered = {
        name
        for name, value in vars(pgtesting).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert sorted(pgtesting.__all__) == sorted(offered)
    for name in pgtesting.__all__:
        value = getattr(pgtesting, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, pgqueue.PgQueueError), name


def test_the_twins_take_the_same_arguments() -> None:
    for sync, asynchronous in (
        (pgtesting.drain, pgtesting.adrain),
        (pgtesting.advance, pgtesting.aadvance),
        (pgtesting.assert_sent, pgtesting.aassert_sent),
        (pgtesting.sent_jobs, pgtesting.asent_jobs),
    ):
        assert inspect.iscoroutinefunction(asynchronous)
        assert list(inspect.signature(sync).parameters) == list(
            inspect.signature(asynchronous).parameters
        )


class Email(BaseModel):
    to: str
    cc: list[str] = []


@pytest.mark.parametrize(
    ("expected", "actual", "result"),
    [
        ({"to": "a"}, {"to": "a", "cc": []}, True),
        ({"to": "a", "cc": ["b"]}, {"to": "a", "cc": ["b", "c"]}, False),  # lists: equal
        ({"user": {"id": 1}}, {"user": {"id": 1, "name": "x"}}, True),  # nested subset
        ({"user": {"id": 2}}, {"user": {"id": 1}}, False),
        ({"to": "a"}, ["to", "a"], False),
        (Email(to="a"), {"to": "a", "cc": []}, True),
        (Email(to="a"), {"to": "a"}, False),  # the model's JSON has cc
        (lambda d: d > 2, 3, True),
        (lambda d: d > 2, 1, False),
        ([1, 2], [1, 2], True),
        (None, None, True),
        ("x", "y", False),
        # ANY and predicates anywhere; values as a send encodes them
        ({"id": pgtesting.ANY, "to": "a"}, {"id": 3, "to": "a"}, True),
        ({"id": pgtesting.ANY}, {"to": "a"}, False),  # the key must be there
        ([1, pgtesting.ANY], [1, {"x": 2}], True),
        ([1, lambda v: v > 1], [1, 1], False),
        (
            {"at": datetime(2026, 1, 2, 3, 4, tzinfo=timezone.utc)},
            {"at": "2026-01-02T03:04:00Z"},
            True,
        ),
        (
            {"at": datetime(2026, 1, 2, 3, 5, tzinfo=timezone.utc)},
            {"at": "2026-01-02T03:04:00Z"},
            False,
        ),
        ({"id": UUID(int=1)}, {"id": "00000000-0000-0000-0000-000000000001"}, True),
        ({"amount": Decimal("1.5")}, {"amount": "1.5"}, True),
        ({"items": (1, 2)}, {"items": [1, 2]}, True),
        ({"items": (1, 2)}, {"items": [1, 2, 3]}, False),
        ([{"a": 1}], [{"a": 1, "b": 2}], False),  # in a list, a mapping is all of it
        ([{"a": pgtesting.ANY}], [{"a": 1}], True),
        (int, 1, False),
    ],
)
def test_matches(expected: Any, actual: Any, result: bool) -> None:
    assert matches(expected, actual) is result


def test_a_drains_summary() -> None:
    runs = [
        Run(1, "a", 1, None, "completed", JobState.completed, 10),
        Run(2, "b", 1, None, "failed", JobState.retry, {"type": "E", "message": "m"}),
        Run(2, "b", 2, None, "failed", JobState.failed, {"type": "E", "message": "n"}),
        Run(3, "a", 1, None, "snoozed", JobState.retry, None),
    ]
    drained = Drained(runs)
    assert len(drained) == 4 and list(drained) == runs
    assert drained.ids == [1, 2, 2, 3] and drained.names == ["a", "b", "b", "a"]
    assert drained.outputs() == [10] and drained.outputs("b") == []
    assert [r.attempt for r in drained.failed] == [1, 2]
    assert [r.attempt for r in drained.retried] == [1]
    assert [r.error for r in drained.failed] == ["E: m", "E: n"]
    assert drained.of("a") == [runs[0], runs[3]] and runs[0].ok and not runs[3].ok
    assert runs[0].error is None
