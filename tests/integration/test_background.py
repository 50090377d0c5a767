"""The periodic runner: one failing step neither stops the others nor goes unnoticed."""

from __future__ import annotations

import time

import pytest

from pgqueue import MaintenanceResult, MaintenanceSettings, PgQueue


def test_cron_keeps_firing_while_maintenance_fails(
    dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = MaintenanceSettings(interval=0.05)
    with PgQueue(dsn, schema=schema, maintenance=settings) as pq:

        def broken() -> MaintenanceResult:
            raise RuntimeError("maintenance is broken")

        monkeypatch.setattr(pq, "_maintain_periodic", broken)
        pq.create_queue("tick")
        pq.schedule("tick", "* * * * * *")  # every second
        runner = pq._maintenance
        assert runner is not None
        deadline = time.monotonic() + 20
        while not (
            pq.get_queue_stats("tick")[0].waiting and isinstance(runner.last_error, RuntimeError)
        ):
            assert time.monotonic() < deadline, f"no job, or no error kept: {runner.last_error}"
            time.sleep(0.05)  # polling the outcome, not synchronising
