"""The heartbeat loop, driven without a database: plans are generators, so a test can answer
their statements itself (here: a connection that fails twice, then comes back)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from pgqueue import ConnectError, JobState, RunningJob
from pgqueue._core import Core
from pgqueue._db import Plan
from pgqueue._heartbeat import Heartbeat
from pgqueue._sql import Statements


class FlakyDatabase:
    """Refuses the first ``failures`` heartbeat writes as a lost connection would, then
    answers each as if every run still held its job; keeps what the writes carried."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.written: list[list[Any]] = []
        self.wrote = asyncio.Event()

    async def __call__(self, plan: Plan[Any]) -> Any:
        stmt = next(plan)
        assert stmt.params is not None
        if "ids" in stmt.params:  # the cancellations missed: none
            rows: list[Any] = []
        else:
            if self.failures:
                self.failures -= 1
                raise ConnectError("connection lost")
            batch = json.loads(stmt.params["batch"])
            self.written.append(batch)
            self.wrote.set()
            rows = [{"id": item[0]} for item in batch]
        try:
            plan.send(rows)
        except StopIteration as stop:
            return stop.value
        raise AssertionError("one statement each")


async def test_a_failed_beat_is_tried_again_soon_and_keeps_its_progress() -> None:
    job = RunningJob(id=1, name="q", data=None, state=JobState.active, run_id=5)
    database = FlakyDatabase(failures=2)
    # A 30 s heartbeat beats every 10 s: a retry that waited for the next round would miss
    # the deadline below, and the progress taken for the failed writes would be lost.
    heartbeat = Heartbeat(database, Core(Statements("s")), {1: job}, 30.0, lambda job: None)
    task = asyncio.create_task(heartbeat.run())
    try:
        job.progress({"step": 1})
        heartbeat.wake.set()
        await asyncio.wait_for(database.wrote.wait(), 5)
    finally:
        task.cancel()
    assert database.failures == 0
    assert database.written == [[[1, 5, {"step": 1}]]]
