"""Every program in examples/ runs end to end, each on a database of its own, run the way its
docstring tells a user to run it: scripts in fresh processes, workers as ``pgqueue worker``
processes started, stopped and killed for real."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from pgqueue import PgQueue
from tests.acceptance.conftest import env_for, poll_until

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def run(database: str, *args: str, timeout: float = 120) -> str:
    """Run ``python ARGS`` from the repository root; its stdout, after checking it succeeded."""
    out = subprocess.run(
        [sys.executable, *args],
        env=env_for(database),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def cli(database: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``pgqueue ARGS``."""
    return subprocess.run(
        [sys.executable, "-m", "pgqueue.cli", *args],
        env=env_for(database),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


class Worker:
    """``pgqueue worker APP`` in a process of its own."""

    def __init__(self, database: str, app: str, log: Path) -> None:
        self.log = log
        with open(log, "wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pgqueue.cli", "worker", app, "--poll-interval", "0.5"],
                env=env_for(database),
                cwd=ROOT,
                stderr=stderr,
            )

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> int:
        """SIGTERM, then wait: the exit status of a graceful stop."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[Worker]]:
    """Started workers go in this list; the ones still running are stopped at the end."""
    started: list[Worker] = []
    yield started
    for worker in started:
        if worker.proc.poll() is None:
            worker.stop()


def start_worker(workers: list[Worker], database: str, app: str, tmp_path: Path) -> Worker:
    worker = Worker(database, app, tmp_path / f"worker-{len(workers)}.log")
    workers.append(worker)
    return worker


def query(database: str, statement: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(database, row_factory=dict_row) as conn:
        return conn.execute(statement, params).fetchall()


def job(database: str, job_id: int) -> dict[str, Any]:
    (row,) = query(database, "SELECT * FROM pgqueue.job WHERE id = %s", job_id)
    return row


def load_example(name: str, database: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import ``examples/NAME.py`` afresh, its queue object pointed at ``database``."""
    monkeypatch.setenv("PGQUEUE_DATABASE_URL", database)
    monkeypatch.delenv("PGQUEUE_SCHEMA", raising=False)
    spec = importlib.util.spec_from_file_location(
        f"example_{name}_{uuid.uuid4().hex[:6]}", ROOT / "examples" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_signup_email(example_db: str) -> None:
    assert run(example_db, "examples/signup_email.py").splitlines()[1:] == [
        "second signup of ada@example.com failed: no email sent",
        "signup with an invalid email refused: no user, no email",
        "resend clicked twice, jobs sent: 1",
        "sent to ada@example.com: Welcome, Ada!",
        "sent to ada@example.com: Welcome, Ada!",
    ]
    assert query(example_db, "SELECT email FROM app_user") == [{"email": "ada@example.com"}]
    jobs = query(example_db, "SELECT * FROM pgqueue.job ORDER BY id")
    assert [(j["name"], j["state"]) for j in jobs] == [
        ("followup-email", "created"),
        ("user-signup", "completed"),
        ("user-signup", "completed"),
    ]
    followup, welcome, _ = jobs
    assert followup["start_after"] - followup["created_at"] > timedelta(days=2, hours=23)
    assert welcome["data"] == {"email": "ada@example.com", "first_name": "Ada"}
    assert (
        welcome["priority"],
        welcome["retry_limit"],
        welcome["retry_backoff"],
        welcome["expire_in"],
        welcome["singleton_key"],
    ) == (10, 5, True, 60, "ada@example.com")


async def test_fastapi_service(
    example_db: str, monkeypatch: pytest.MonkeyPatch, workers: list[Worker], tmp_path: Path
) -> None:
    service = load_example("fastapi_service", example_db, monkeypatch)
    start_worker(workers, example_db, "examples.fastapi_service:pq", tmp_path)
    async with service.app.router.lifespan_context(service.app):
        transport = httpx.ASGITransport(app=service.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            response = await client.post("/reports", json={"year": 2026})
            assert response.status_code == 202
            job_id = response.json()["job_id"]
            # Committed before the response went out: the job is there at once.
            status = (await client.get(f"/jobs/{job_id}")).json()
            assert status["state"] in {"created", "active", "completed"}
            # The same year again: 409, and the rollback took that request's job with it.
            again = await client.post("/reports", json={"year": 2026})
            assert again.status_code == 409
            assert (await client.post("/reports", json={"year": "soon"})).status_code == 422
            assert (await client.get("/jobs/999999")).status_code == 404
            deadline = datetime.now(timezone.utc) + timedelta(seconds=60)
            while status["state"] != "completed" and datetime.now(timezone.utc) < deadline:
                await asyncio.sleep(0.1)  # polling the API, as a client would
                status = (await client.get(f"/jobs/{job_id}")).json()
    assert status == {
        "state": "completed",
        "progress": {"month": 12, "of": 12},
        "output": {"year": 2026, "pages": 12},
    }
    assert query(example_db, "SELECT count(*) FROM pgqueue.job") == [{"count": 1}]
    assert query(example_db, "SELECT year, job_id FROM report") == [
        {"year": 2026, "job_id": job_id}
    ]


def test_sync_producer_with_an_async_worker(
    example_db: str, workers: list[Worker], tmp_path: Path
) -> None:
    ids = json.loads(run(example_db, "examples/sync_producer.py").removeprefix("sent "))
    assert len(ids) == 3
    # The rolled-back send left nothing behind.
    assert [r["id"] for r in query(example_db, "SELECT id FROM pgqueue.job")] == ids
    worker = start_worker(workers, example_db, "examples.sync_producer:pq", tmp_path)
    poll_until(
        lambda: all(job(example_db, i)["state"] == "completed" for i in ids),
        60,
        "the async worker to resize the images",
    )
    assert [job(example_db, i)["output"] for i in ids] == [
        f"img/{n}.png resized to 128px" for n in range(3)
    ]
    assert worker.stop() == 0


def test_cron_schedules_over_a_simulated_day(
    example_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cron = load_example("cron_schedules", example_db, monkeypatch)
    # The day that ends now, at half past each minute: the database's clock moves, nobody
    # waits.
    end = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(seconds=30)
    with PgQueue(example_db, maintenance=False) as setup:  # before the schedules are written
        setup.set_clock(end - timedelta(days=1))
    with cron.pq:
        cron.add_cleanup_schedule()
        for _ in range(24 * 60):
            cron.pq.move_clock(60)
            cron.pq.run_schedules()  # what every started instance does each interval
        cron.pq.work(until_empty=True)
        schedules = {s.name: s for s in cron.pq.get_schedules()}
    assert {(s.name, s.cron, s.tz, s.from_code) for s in schedules.values()} == {
        ("heartbeat-check", "* * * * *", "UTC", True),
        ("morning-report", "0 9 * * *", "Europe/Berlin", True),
        ("nightly-cleanup", "30 2 * * *", "UTC", False),
    }
    done = query(
        example_db,
        "SELECT name, output, count(*) FROM pgqueue.job"
        " WHERE state = 'completed' GROUP BY name, output ORDER BY name",
    )
    assert done == [
        {"name": "heartbeat-check", "output": "all services up", "count": 24 * 60},
        {"name": "morning-report", "output": "morning report sent as pdf", "count": 1},
        {"name": "nightly-cleanup", "output": "deleted rows older than 30 days", "count": 1},
    ]
    # 09:00 in Berlin, whatever the UTC offset (daylight saving) was on that day.
    berlin = [
        datetime.combine(
            date.fromordinal(end.date().toordinal() - d), time(9), ZoneInfo("Europe/Berlin")
        )
        for d in (0, 1)
    ]
    (slot,) = [s for s in berlin if end - timedelta(days=1) < s <= end]
    assert schedules["morning-report"].last_slot == slot


def test_file_outbox(example_db: str) -> None:
    lines = run(example_db, "examples/file_outbox.py").splitlines()
    assert lines == [
        "job 1 thumbnail: completed: thumbnail of cat.png",
        "job 2 virus-scan: failed: virus scanner unreachable",
        "re-running 1 failed copy",
        "job 1 thumbnail: completed: thumbnail of cat.png",
        "job 2 virus-scan: completed: cat.png is clean",
    ]
    # The scan's failures never touched the thumbnail's copy: it ran once.
    assert job(example_db, 1)["retry_count"] == 0
    assert query(example_db, "SELECT path, job_ids FROM uploaded_file") == [
        {"path": "cat.png", "job_ids": [1, 2]}
    ]


def test_job_catalogue_lists_and_runs_jobs_by_name(
    example_db: str, workers: list[Worker], tmp_path: Path
) -> None:
    listing = cli(example_db, "jobs", "examples.job_catalogue:pq")
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.splitlines() == [
        "add: Add two numbers",
        "    retry_limit=0",
        "greet: Greet someone by name.",
        "    expire_in=10, priority=5",
        "reindex (concurrency 1): Rebuild the search index (one at a time).",
        "    retry_backoff=True, retry_limit=5",
    ]
    as_json = cli(example_db, "jobs", "examples.job_catalogue:pq", "--json")
    assert [json.loads(line) for line in as_json.stdout.splitlines()][-1] == {
        "name": "reindex",
        "description": "Rebuild the search index (one at a time).",
        "options": {"retry_backoff": True, "retry_limit": 5},
        "concurrency": 1,
    }
    start_worker(workers, example_db, "examples.job_catalogue:pq", tmp_path)
    added = cli(
        example_db,
        "send",
        "examples.job_catalogue:pq",
        "add",
        "--data",
        '{"a": 2, "b": 3}',
        "--wait",
    )
    assert (added.returncode, added.stdout) == (0, "5\n"), added.stderr
    greeted = cli(
        example_db,
        "send",
        "examples.job_catalogue:pq",
        "greet",
        "--data",
        '{"name": "Ada"}',
        "--wait",
    )
    assert (greeted.returncode, json.loads(greeted.stdout)) == (0, "Hello, Ada!")
    queued = cli(example_db, "send", "examples.job_catalogue:pq", "reindex")
    assert queued.returncode == 0 and int(queued.stdout) > 0  # without --wait: the id
    refused = cli(example_db, "send", "examples.job_catalogue:pq", "add", "--data", '{"a": "x"}')
    assert refused.returncode == 1 and "Pair" in refused.stderr
    assert query(example_db, "SELECT count(*) FROM pgqueue.job WHERE name = 'add'") == [
        {"count": 1}
    ]


def test_long_running_progress_cancel_and_resume(
    example_db: str, workers: list[Worker], tmp_path: Path
) -> None:
    def send(*args: str) -> int:
        return int(run(example_db, "examples/long_running.py", "send", *args))

    def done(job_id: int) -> int:
        return int((job(example_db, job_id)["progress"] or {}).get("done", 0))

    first = start_worker(workers, example_db, "examples.long_running:pq", tmp_path)
    # Cancelled while it runs: the handler stops, the worker carries on.
    cancelled = send("--steps", "600", "--step-seconds", "0.2")
    poll_until(lambda: done(cancelled) >= 2, 60, "progress to be reported")
    assert run(example_db, "examples/long_running.py", "cancel", str(cancelled)) == "cancelled\n"
    assert job(example_db, cancelled)["state"] == "cancelled"
    # Its worker killed half way: the heartbeat goes stale, another worker resumes the job.
    resumed = send("--steps", "16", "--step-seconds", "0.25", "--heartbeat", "2")
    poll_until(lambda: done(resumed) >= 4, 60, "the job to make progress")
    first.kill()
    checkpoint = done(resumed)
    start_worker(workers, example_db, "examples.long_running:pq", tmp_path)
    poll_until(
        lambda: job(example_db, resumed)["state"] == "completed",
        90,
        "the job to finish on the second worker",
    )
    final = job(example_db, resumed)
    assert final["retry_count"] == 1
    assert final["output"] == {"steps": 16, "resumed_at": checkpoint}
    assert done(cancelled) < 600
    status = run(example_db, "examples/long_running.py", "status", str(resumed))
    assert status.startswith("completed progress=") and "'done': 16" in status


def test_document_pipeline(example_db: str) -> None:
    lines = run(example_db, "examples/document_pipeline.py").splitlines()
    assert lines == [
        "report: 3 pages",
        "report: FIRST PAGE / SECOND PAGE / THIRD PAGE",
        "  page job 2: completed",
        "  page job 3: completed",
        "  page job 4: completed",
        "scan: 3 pages",
        "scan: assembly cancelled: job 8, which it depends on, failed",
        "  page job 7: completed",
        "  page job 8: failed",
        "  page job 9: completed",
    ]
    assembly = job(example_db, 10)
    assert assembly["depends_on"] == [7, 8, 9]
    assert assembly["output"]["parent"] == 8
    assert job(example_db, 8)["retry_count"] == 1  # retried once, then failed for good
