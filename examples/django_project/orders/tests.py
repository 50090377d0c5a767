"""The example's tests, run by Django's test runner on PostgreSQL (``python manage.py
test``): jobs are sent in the request's transaction, a rollback leaves none, workers run
them, and ``django.tasks`` tasks run on pgqueue's workers."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.core.management import call_command
from django.db import connection, transaction
from django.test import TransactionTestCase
from psycopg.conninfo import make_conninfo

from pgqueue import JobState
from pgqueue.contrib.django import pq

from .jobs import Confirm, confirm_order
from .models import Order
from .tasks import add_note, refuse

try:
    from django.tasks import TaskResultStatus
except ImportError:  # Django before 6.0
    from django_tasks import TaskResultStatus

PROJECT = Path(__file__).resolve().parents[1]
DEADLINE = 60.0  # seconds a worker subprocess gets to do what a test waits for


def drain() -> None:
    """Run every runnable job in this process, then return."""
    pq.work(until_empty=True, poll_interval=0.1)


class SendInTransactionTests(TransactionTestCase):
    # TransactionTestCase: each test's transactions really commit, so that a worker (on its
    # own connections) sees what a test sent. pgqueue's schema is not Django's: empty it.
    def tearDown(self) -> None:
        for name in ("orders.confirm", "tasks.default", "tasks.slow"):
            pq.purge_queue(name)
            for job in pq.find_jobs(name, archived=True, limit=10_000):
                pq.delete_job(job.id)

    def test_a_request_commits_its_order_and_its_job_together(self) -> None:
        response = self.client.post(
            "/orders/", {"email": "ada@example.com", "total_cents": 1200}, "application/json"
        )
        self.assertEqual(response.status_code, 201)
        body = response.json()
        job = pq.get_job_by_id(body["job"])
        assert job is not None
        self.assertEqual(job.state, JobState.created)
        self.assertEqual(job.data, {"order_id": body["order"]})

    def test_a_request_that_fails_after_sending_leaves_no_order_and_no_job(self) -> None:
        with self.assertRaises(ValueError):
            self.client.post(
                "/orders/",
                {"email": "bob@example.com", "total_cents": 5, "fail": True},
                "application/json",
            )
        self.assertFalse(Order.objects.exists())
        self.assertEqual(pq.find_jobs("orders.confirm"), [])

    def test_a_rolled_back_savepoint_takes_its_job_and_the_outer_block_keeps_its_own(
        self,
    ) -> None:
        order = Order.objects.create(email="c@example.com", total_cents=1)
        with transaction.atomic():
            kept = confirm_order.send(Confirm(order_id=order.pk))
            try:
                with transaction.atomic():  # a savepoint
                    dropped = confirm_order.send(Confirm(order_id=order.pk))
                    raise LookupError
            except LookupError:
                pass
        assert kept is not None and dropped is not None
        self.assertIsNotNone(pq.get_job_by_id(kept))
        self.assertIsNone(pq.get_job_by_id(dropped))

    def test_a_worker_runs_the_job_of_a_committed_request(self) -> None:
        response = self.client.post(
            "/orders/", {"email": "dee@example.com", "total_cents": 300}, "application/json"
        )
        order_id = response.json()["order"]
        call_command("pgqueue_worker", "--until-empty", "--poll-interval", "0.1")
        self.assertTrue(Order.objects.get(pk=order_id).confirmed)
        status = self.client.get(f"/orders/{order_id}/").json()
        self.assertEqual(status["jobs"][0]["state"], "completed")
        self.assertEqual(status["jobs"][0]["output"], "confirmed 1 order(s)")

    def test_pgqueue_worker_runs_jobs_in_its_own_process_and_stops_on_sigterm(self) -> None:
        order = Order.objects.create(email="eve@example.com", total_cents=7)
        with transaction.atomic():
            confirm_order.send(Confirm(order_id=order.pk))
        settings = connection.settings_dict  # the test database
        env = {
            **os.environ,
            "PGQUEUE_DATABASE_URL": make_conninfo(
                "",
                dbname=settings["NAME"],
                user=settings["USER"] or None,
                password=settings["PASSWORD"] or None,
                host=settings["HOST"] or None,
                port=str(settings["PORT"]) if settings["PORT"] else None,
            ),
        }
        worker = subprocess.Popen(
            [sys.executable, "manage.py", "pgqueue_worker", "--poll-interval", "0.2"],
            cwd=PROJECT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            deadline = time.monotonic() + DEADLINE
            while not Order.objects.get(pk=order.pk).confirmed:
                self.assertIsNone(worker.poll(), "the worker exited early")
                self.assertLess(time.monotonic(), deadline, "the worker did not run the job")
                time.sleep(0.1)  # polling the database until the deadline
            worker.send_signal(signal.SIGTERM)
            output, _ = worker.communicate(timeout=DEADLINE)
            self.assertEqual(worker.returncode, 0, output)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()


class TasksBackendTests(TransactionTestCase):
    def tearDown(self) -> None:
        SendInTransactionTests.tearDown(self)  # type: ignore[arg-type]

    def test_an_enqueued_task_runs_on_a_pgqueue_worker_and_its_result_reads_back(self) -> None:
        order = Order.objects.create(email="fay@example.com", total_cents=9)
        result = add_note.enqueue(order.pk, "gift wrap")
        self.assertEqual(result.status, TaskResultStatus.READY)
        job = pq.get_job_by_id(int(result.id))
        assert job is not None
        self.assertEqual((job.name, job.priority), ("tasks.default", 10))
        drain()
        done = add_note.get_result(result.id)
        self.assertEqual(done.status, TaskResultStatus.SUCCESSFUL)
        self.assertEqual(done.return_value, {"order": order.pk, "notes": ["gift wrap"]})
        self.assertEqual(done.args, [order.pk, "gift wrap"])
        self.assertIsNotNone(done.finished_at)
        result.refresh()
        self.assertEqual(result.status, TaskResultStatus.SUCCESSFUL)
        self.assertEqual(Order.objects.get(pk=order.pk).note, "gift wrap\n")

    def test_a_task_enqueued_in_a_rolled_back_block_never_runs(self) -> None:
        order = Order.objects.create(email="gus@example.com", total_cents=9)
        try:
            with transaction.atomic():
                result = add_note.enqueue(order.pk, "never")
                raise RuntimeError
        except RuntimeError:
            pass
        drain()
        self.assertEqual(Order.objects.get(pk=order.pk).note, "")
        self.assertIsNone(pq.get_job_by_id(int(result.id)))

    def test_a_failing_task_reads_back_failed_with_its_exception(self) -> None:
        result = refuse.enqueue("no entry")
        drain()
        done = refuse.get_result(result.id)
        self.assertEqual(done.status, TaskResultStatus.FAILED)
        self.assertEqual(len(done.errors), 1)
        self.assertEqual(done.errors[0].exception_class, PermissionError)
        self.assertIn("no entry", done.errors[0].traceback)
        with self.assertRaises(ValueError):
            done.return_value  # noqa: B018 (what a failed result's return_value does)
