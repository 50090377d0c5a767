"""A background task's failures are logged with something to read."""

from __future__ import annotations

import asyncio

import pytest

from pgqueue._async.runner import AsyncPeriodic


async def test_an_error_without_a_message_is_logged_by_its_type(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failed = asyncio.Event()

    async def tick() -> None:
        failed.set()
        raise TimeoutError()

    periodic = AsyncPeriodic("pgqueue-test-tick", 60.0, tick)
    await periodic.start()
    await asyncio.wait_for(failed.wait(), 5)
    await periodic.stop()
    assert isinstance(periodic.last_error, TimeoutError)
    assert "pgqueue-test-tick failed: TimeoutError" in caplog.text
