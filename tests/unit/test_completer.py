"""The completer's batching, driven without a database: plans are generators, so a test can
answer their statements itself."""

from __future__ import annotations

import json
from typing import Any

from pgqueue._completer import Completer
from pgqueue._core import Core
from pgqueue._db import Plan
from pgqueue._executor import Outcome
from pgqueue._sql import Statements


class Recorder:
    """Answers every completion statement as if each job were still held, and keeps the
    batches it saw."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    async def __call__(self, plan: Plan[Any]) -> Any:
        stmt = next(plan)
        assert stmt.params is not None
        ids = [item[0] for item in json.loads(stmt.params["batch"])]
        self.batches.append(ids)
        try:
            plan.send([{"id": i} for i in ids])
        except StopIteration as stop:
            return stop.value
        raise AssertionError("a completion is one statement")


async def test_batches_are_bounded_by_count_and_by_bytes() -> None:
    run = Recorder()
    completer = Completer(run, Core(Statements("s")), max_batch=10, max_bytes=1000)
    big = json.dumps("x" * 400)
    for i in range(6):  # 6 outputs of about 400 bytes: two fit in 1,000 bytes
        completer.add(Outcome(i, 1, 7, "completed", big))
    for i in range(6, 31):
        completer.add(Outcome(i, 1, 7, "completed", "1"))
    await completer.flush()
    await completer.stop()
    assert run.batches[:2] == [[0, 1], [2, 3]]  # two big outputs fill 1,000 bytes
    assert run.batches[2] == [4, 5, *range(6, 14)]  # then ten: the count bound
    assert [i for batch in run.batches for i in batch] == list(range(31))
    assert all(len(b) <= 10 for b in run.batches)


async def test_an_outcome_larger_than_the_byte_bound_still_goes_alone() -> None:
    run = Recorder()
    completer = Completer(run, Core(Statements("s")), max_bytes=10)
    completer.add(Outcome(1, 1, 7, "completed", json.dumps("y" * 100)))
    completer.add(Outcome(2, 1, 7, "completed", "2"))
    await completer.flush()
    await completer.stop()
    assert run.batches == [[1], [2]]
