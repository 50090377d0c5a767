"""``flask --app examples.flask_app pgqueue worker`` in a process of its own: it runs the jobs
the app's views sent, inside the app's context, and stops gracefully on SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from examples.flask_app import create_app
from examples.flask_app.jobs import pgqueue
from flask import Flask

from pgqueue import JobState
from tests.acceptance.conftest import poll_until
from tests.conftest import child_environ

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture
def app(dsn: str, schema: str) -> Iterator[Flask]:
    made = create_app({"PGQUEUE_DSN": dsn, "PGQUEUE_SCHEMA": schema})
    yield made
    pgqueue.stop(made)


def flask_worker(dsn: str, schema: str, *args: str, stderr: Path) -> subprocess.Popen[bytes]:
    """The worker command, configured the way a deployment would: FLASK_* variables."""
    env = {
        **child_environ(),
        "FLASK_PGQUEUE_DSN": dsn,
        "FLASK_PGQUEUE_SCHEMA": schema,
        "FLASK_SITE_NAME": "Subprocess",
    }
    argv = [sys.executable, "-m", "flask", "--app", "examples.flask_app", "pgqueue", "worker"]
    with open(stderr, "wb") as err:
        return subprocess.Popen(
            [*argv, "--poll-interval", "0.2", *args], cwd=ROOT, env=env, stderr=err
        )


def sent(app: Flask, email: str) -> int:
    response = app.test_client().post("/signup", json={"email": email})
    assert response.status_code == 202
    return int(response.get_json()["job"])


def test_the_worker_command_runs_a_job_sent_by_a_view(
    app: Flask, dsn: str, schema: str, tmp_path: Path
) -> None:
    job_id = sent(app, "ada@example.com")
    worker = flask_worker(dsn, schema, "--until-empty", stderr=tmp_path / "worker.log")
    assert worker.wait(120) == 0, (tmp_path / "worker.log").read_text()
    job = pgqueue.get_queue(app).get_job_by_id(job_id)
    assert job is not None and job.state == JobState.completed
    assert job.output == {
        "from": "hello@example.com",
        "to": "ada@example.com",
        "subject": "Welcome to Subprocess",  # the worker app's configuration
        "app": "examples.flask_app",
    }


def test_the_worker_command_stops_gracefully_on_sigterm(
    app: Flask, dsn: str, schema: str, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    with socket.socket() as probe:  # a free port for the health endpoint
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    worker = flask_worker(
        dsn, schema, "--health-port", str(port), "--health-host", "127.0.0.1", stderr=log
    )
    try:
        job_id = sent(app, "bob@example.com")

        def done() -> bool:
            job = pgqueue.get_queue(app).get_job_by_id(job_id)
            return job is not None and job.state == JobState.completed

        poll_until(done, 60, "the worker process to run the job")

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
            except httpx.TransportError:
                return False

        poll_until(healthy, 30, "the worker's health endpoint")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0, log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(30)
    text = log.read_text()
    assert "started: queues welcome-email" in text and "stopped after 1 jobs" in text
