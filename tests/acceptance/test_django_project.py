"""The Django example project's own tests (examples/django_project: a send in a request's
transaction, a rollback, the worker, a django.tasks task run on pgqueue's worker) pass
under Django's test runner on this suite's server."""

from __future__ import annotations

import re
import shutil
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


DATA_MIGRATION = """
from django.db import migrations


def send(apps, schema_editor):
    from pgqueue.contrib.django import pq

    pq.send("orders.confirm", {"order_id": 0})


class Migration(migrations.Migration):
    dependencies = [("orders", "0001_initial")]
    operations = [migrations.RunPython(send, migrations.RunPython.noop)]
"""


def test_a_data_migration_that_sends_a_job_lets_parallel_tests_clone_the_database(
    example_db: str, tmp_path: Path
) -> None:
    project = tmp_path / "django_project"
    shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns("__pycache__"))
    (project / "orders" / "migrations" / "0002_send.py").write_text(DATA_MIGRATION)
    run = subprocess.run(
        [
            *(sys.executable, "manage.py", "test", "--noinput", "--parallel", "2"),
            *("orders.test_contrib.SettingsTests", "orders.test_contrib.TaskEdgeTests"),
        ],
        cwd=project,
        env=env_for(example_db),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Cloning test database" in run.stderr and "OK" in run.stderr, run.stderr
