"""The Django example project's own tests (examples/django_project: a send in a request's
transaction, a rollback, the worker, a django.tasks task run on pgqueue's worker) pass
under Django's test runner on this suite's server."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import env_for

pytest.importorskip("django", reason="the dev extra installs Django")
pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[2] / "examples" / "django_project"


def test_the_django_example_projects_tests_pass(example_db: str) -> None:
    run = subprocess.run(
        [sys.executable, "manage.py", "test", "--noinput", "-v", "2"],
        cwd=PROJECT,
        env=env_for(example_db),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    # Every test ran (none skipped), each of the contract's.
    assert "OK" in run.stderr and "skipped" not in run.stderr, run.stderr
    for name in (
        "test_a_request_commits_its_order_and_its_job_together",
        "test_a_request_that_fails_after_sending_leaves_no_order_and_no_job",
        "test_pgqueue_worker_runs_jobs_in_its_own_process_and_stops_on_sigterm",
        "test_an_enqueued_task_runs_on_a_pgqueue_worker_and_its_result_reads_back",
    ):
        assert re.search(rf"^{name} \(.*\) \.\.\. ok$", run.stderr, re.MULTILINE), name
