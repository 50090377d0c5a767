"""Two applications' worker processes on one schema: the second learns at start that both
register a handler for the same queue; with on_conflict="error" it refuses to start."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.acceptance.conftest import env_for, poll_until

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def worker(dsn: str, schema: str, app: str, log: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**env_for(dsn), "SHARED_SCHEMA": schema}
    argv = [sys.executable, "-m", "pgqueue.cli", "worker", f"tests.acceptance.shared_apps:{app}"]
    with open(log, "wb") as err:
        return subprocess.Popen(
            [*argv, "--poll-interval", "0.2", *args], cwd=ROOT, env=env, stderr=err
        )


def registered(dsn: str, schema: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        try:
            rows = conn.execute(
                sql.SQL("SELECT app FROM {}.handler").format(sql.Identifier(schema))
            ).fetchall()
        except psycopg.errors.UndefinedTable:
            return set()
    return {r[0] for r in rows}


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def test_the_second_app_warns_and_the_strict_one_refuses(
    dsn: str, schema: str, tmp_path: Path
) -> None:
    logs = [tmp_path / f"{name}.log" for name in ("billing", "crm", "strict")]
    first = worker(dsn, schema, "billing", logs[0])
    second: subprocess.Popen[bytes] | None = None
    try:
        poll_until(lambda: registered(dsn, schema) == {"billing"}, 60, "billing's registration")
        second = worker(dsn, schema, "crm", logs[1])
        poll_until(lambda: "both serve it" in logs[1].read_text(), 60, "crm's warning")
        warning = next(line for line in logs[1].read_text().splitlines() if "both serve" in line)
        assert "WARNING" in warning and "queue send-email" in warning
        assert "tests.acceptance.shared_apps:send_crm_email of app 'crm'" in warning
        assert "tests.acceptance.shared_apps:send_invoice_email of app 'billing'" in warning
        assert "both serve it" not in logs[0].read_text()  # billing warns at its refresh
        # Told to refuse, a third worker of crm does not start, says why, and exits 1.
        strict = worker(dsn, schema, "crm", logs[2], "--on-conflict", "error")
        assert strict.wait(60) == 1
        text = logs[2].read_text()
        assert "pgqueue: error: handlers conflict with another app's" in text
        assert "started" not in text
    finally:
        assert stop(first) == 0
        if second is not None:
            assert stop(second) == 0
