"""pgqueue.contrib.django where it can break: Django's connection closed or killed under a
send, settings that are wrong, a task whose module moved, result ids that are not."""

import warnings
from datetime import timedelta
from unittest import skipIf

import psycopg
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured, SynchronousOnlyOperation
from django.db import connection, transaction
from django.db.transaction import TransactionManagementError
from django.test import Client, SimpleTestCase, TransactionTestCase, override_settings
from django.utils import timezone
from psycopg import sql

from pgqueue import JobState
from pgqueue.contrib.django import DjangoPgQueue, pq
from pgqueue.contrib.django._queue import _psycopg3
from pgqueue.contrib.django._settings import load_settings
from pgqueue.contrib.django.tasks import PgQueueBackend, _task_error
from pgqueue.errors import DatabaseError

from .jobs import Confirm, confirm_order
from .models import Order
from .tasks import add_note, attempt_number, shout
from .tests import SendInTransactionTests, drain

try:
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
except ImportError:  # Django before 6.0
    from django_tasks.exceptions import InvalidTaskError as InvalidTask  # type: ignore[assignment]
    from django_tasks.exceptions import TaskResultDoesNotExist  # type: ignore[assignment]


def kill_django_connection() -> None:
    """End the server process behind Django's connection, from another connection."""
    pid = connection.connection.info.backend_pid
    assert pq.dsn is not None
    with psycopg.connect(pq.dsn, autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])


class ConnectionTests(TransactionTestCase):
    def tearDown(self) -> None:
        SendInTransactionTests.tearDown(self)  # type: ignore[arg-type]

    def test_a_send_after_django_closed_its_connection_reconnects(self) -> None:
        Order.objects.count()
        connection.close()
        handle = confirm_order.send(Confirm(order_id=1))
        assert handle is not None
        self.assertIsNotNone(pq.get_job_by_id(handle))

    def test_a_send_on_a_killed_connection_fails_typed_and_the_next_one_reconnects(
        self,
    ) -> None:
        Order.objects.count()
        kill_django_connection()
        with self.assertRaises(DatabaseError):
            confirm_order.send(Confirm(order_id=1))
        self.assertTrue(connection.errors_occurred)  # Django closes it before reuse
        handle = confirm_order.send(Confirm(order_id=2))
        assert handle is not None
        job = pq.get_job_by_id(handle)
        assert job is not None
        self.assertEqual(job.data, {"order_id": 2})

    def test_a_connection_killed_inside_atomic_loses_the_block_and_its_jobs(self) -> None:
        with self.assertRaises(DatabaseError), transaction.atomic():
            Order.objects.create(email="k@example.com", total_cents=1)
            first = confirm_order.send(Confirm(order_id=1))
            kill_django_connection()
            confirm_order.send(Confirm(order_id=2))
        connection.close()
        self.assertFalse(Order.objects.exists())
        assert first is not None
        self.assertIsNone(pq.get_job_by_id(first))
        self.assertEqual(pq.find_jobs("orders.confirm"), [])

    def test_a_send_that_fails_in_the_database_marks_the_atomic_block_for_rollback(
        self,
    ) -> None:
        assert pq.dsn is not None
        table = sql.Identifier(pq.schema, "job")
        with psycopg.connect(pq.dsn) as locker:  # holds the job table until it ends
            locker.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(table))
            with transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL lock_timeout = '50ms'")
                with self.assertRaises(DatabaseError):  # the server aborted the transaction
                    confirm_order.send(Confirm(order_id=1))
                self.assertTrue(transaction.get_rollback())
                with self.assertRaises(TransactionManagementError):  # Django refuses to go on
                    Order.objects.count()
                with self.assertRaises(TransactionManagementError):  # and so does pgqueue
                    confirm_order.send(Confirm(order_id=2))
        self.assertEqual(pq.find_jobs("orders.confirm"), [])

    async def test_a_send_from_async_code_is_refused_by_django(self) -> None:
        with self.assertRaises(SynchronousOnlyOperation):
            confirm_order.send(Confirm(order_id=1))
        handle = await sync_to_async(confirm_order.send)(Confirm(order_id=1))
        self.assertIsNotNone(handle)

    def test_an_explicit_conn_is_used_as_given(self) -> None:
        assert pq.dsn is not None
        with psycopg.connect(pq.dsn) as conn:
            handle = pq.send("orders.confirm", {"order_id": 5}, conn=conn)
            conn.rollback()
        assert handle is not None
        self.assertIsNone(pq.get_job_by_id(handle))


class TaskEdgeTests(TransactionTestCase):
    def tearDown(self) -> None:
        pq.set_clock(None)
        SendInTransactionTests.tearDown(self)  # type: ignore[arg-type]

    def test_a_task_whose_module_moved_fails_and_says_so(self) -> None:
        order = Order.objects.create(email="m@example.com", total_cents=1)
        result = add_note.enqueue(order.pk, "x")
        job = pq.get_job_by_id(int(result.id))
        assert job is not None
        pq.update_job(job.id, data={**job.data, "task": "orders.tasks_gone.add_note"})
        drain()
        failed = pq.get_job_by_id(job.id)
        assert failed is not None
        self.assertEqual(failed.state, JobState.failed)
        self.assertIn("orders.tasks_gone.add_note", failed.output["message"])
        with self.assertRaisesRegex(InvalidTask, "does not import"):
            add_note.get_backend().get_result(result.id)

    def test_a_task_taking_its_context_and_an_async_task_run(self) -> None:
        counted = attempt_number.enqueue("first")
        shouted = shout.enqueue("quiet")
        drain()
        self.assertEqual(attempt_number.get_result(counted.id).return_value, "first: attempt 1")
        self.assertEqual(shout.get_result(shouted.id).return_value, "QUIET")

    def test_result_ids_that_name_no_task_do_not_exist(self) -> None:
        backend = add_note.get_backend()
        other = confirm_order.send(Confirm(order_id=1))
        for result_id in ("abc", "", "-1", "0", "99999999999999999999", "123456789", str(other)):
            with self.assertRaises(TaskResultDoesNotExist, msg=result_id):
                backend.get_result(result_id)

    def test_run_after_defers_the_job_to_the_databases_clock(self) -> None:
        order = Order.objects.create(email="r@example.com", total_cents=1)
        later = add_note.using(run_after=timezone.now() + timedelta(hours=1))
        result = later.enqueue(order.pk, "later")
        drain()
        self.assertEqual(add_note.get_result(result.id).status, "READY")
        pq.move_clock(3601)
        drain()
        self.assertEqual(add_note.get_result(result.id).status, "SUCCESSFUL")

    def test_a_queue_the_backend_does_not_list_is_refused(self) -> None:
        with self.assertRaises(InvalidTask):
            add_note.using(queue_name="elsewhere")


class SettingsTests(SimpleTestCase):
    def refused(self, setting: object, message: str) -> None:
        with (
            override_settings(PGQUEUE=setting),
            self.assertRaisesRegex(ImproperlyConfigured, message),
        ):
            DjangoPgQueue(load_settings())

    def test_bad_settings_are_refused_with_what_is_wrong(self) -> None:
        self.refused(["DSN"], "PGQUEUE must be a dict")
        self.refused({"SHEMA": "x"}, "unknown PGQUEUE key.*SHEMA")
        self.refused({"DATABASE": "replica"}, "'replica' is not in settings.DATABASES")
        self.refused({"DATABASE": None}, "give DSN")
        self.refused({"DSN": ""}, "DSN must be a database URL")
        self.refused({"DSN": "postgresql://h:notaport/db"}, "bad port|invalid")
        self.refused({"SCHEMA": "pg_catalog"}, "schema")
        self.refused({"OPTIONS": {"pool_size": 3}}, "unknown OPTIONS key.*pool_size")
        self.refused({"OPTIONS": {"pool_max_size": 0}}, "pool sizes")
        self.refused({"WORKER": {"until_empty": True}}, "unknown WORKER key")
        self.refused({"AUTODISCOVER": "jobs"}, "AUTODISCOVER must be a list")
        self.refused({"MIGRATE": "yes"}, "MIGRATE must be True or False")

    def test_a_dsn_of_its_own_keeps_pgqueue_off_djangos_connection(self) -> None:
        url = "postgresql://somewhere/else"
        with override_settings(PGQUEUE={"DSN": url}):
            self.assertIsNone(load_settings().database)
        with override_settings(PGQUEUE={"DSN": url, "DATABASE": "default"}):
            self.assertEqual(load_settings().database, "default")

    def test_bad_task_backend_options_are_refused(self) -> None:
        for options, message in (
            ({"retries": 3}, "unknown option.*retries"),
            ({"retry_limit": "3"}, "retry_limit"),
            ({"QUEUE_PREFIX": 7}, "QUEUE_PREFIX must be a string"),
            ([], "must be a dict"),
        ):
            with self.assertRaisesRegex(ImproperlyConfigured, message):
                PgQueueBackend("default", {"OPTIONS": options})

    def test_a_django_connection_that_is_not_psycopg_3s_is_refused(self) -> None:
        # What Django before 4.2 (psycopg2 only) would hand over: refused, never used.
        class Psycopg2Connection:
            closed = 0

        with self.assertRaisesRegex(ImproperlyConfigured, "not psycopg 3's.*Psycopg2Connection"):
            _psycopg3("default", Psycopg2Connection())

    def test_stored_errors_name_their_exception_class(self) -> None:
        trace = (
            "Traceback (most recent call last):\n  ...\norders.tasks.Outer.Refused: no: really\n"
        )
        for stored, path in (
            (
                {"type": "Refused", "message": "no", "traceback": trace},
                "orders.tasks.Outer.Refused",
            ),
            (
                {"type": "ValueError", "traceback": "Traceback\nValueError: bad"},
                "builtins.ValueError",
            ),
            ({"type": "KeyError", "traceback": "cut short"}, "builtins.KeyError"),
            ({"type": "Gone", "traceback": "cut short"}, "builtins.Exception"),
            ({"message": "its run expired"}, "builtins.Exception"),
            (None, "builtins.Exception"),
        ):
            self.assertEqual(_task_error(stored).exception_class_path, path, stored)

    def test_a_database_that_is_not_postgresql_is_refused(self) -> None:
        databases = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Django warns that DATABASES is overridden
            with (
                override_settings(DATABASES=databases),
                self.assertRaisesRegex(ImproperlyConfigured, "needs PostgreSQL"),
            ):
                load_settings()


try:
    import httpx

    from pgqueue.contrib.django.dashboard import with_dashboard
except ImportError:  # without pgqueue[dashboard] (the Django 6.0 CI run)
    httpx = None  # type: ignore[assignment]


def session_of(username: str, *, staff: bool) -> dict[str, str]:
    """The session cookie of a new user signed in."""
    client = Client()
    client.force_login(User.objects.create_user(username, password="pw", is_staff=staff))
    return {settings.SESSION_COOKIE_NAME: client.cookies[settings.SESSION_COOKIE_NAME].value}


@skipIf(httpx is None, "pgqueue[dashboard] is not installed")
class DashboardTests(TransactionTestCase):
    async def test_the_dashboard_serves_djangos_staff_only_and_django_the_rest(self) -> None:
        from django.core.asgi import get_asgi_application

        staff = await sync_to_async(session_of)("ops", staff=True)
        other = await sync_to_async(session_of)("customer", staff=False)
        app = with_dashboard(get_asgi_application(), path="/pgqueue")
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
        ):
            self.assertEqual((await client.get("/pgqueue/api/queues")).status_code, 401)
            page = await client.get("/pgqueue/")
            self.assertEqual(page.status_code, 303)
            self.assertEqual(page.headers["location"], "/admin/login/?next=/pgqueue/")
            refused = await client.get("/pgqueue/api/queues", cookies=other)
            self.assertEqual(refused.status_code, 401)
            queues = await client.get("/pgqueue/api/queues", cookies=staff)
            self.assertEqual(queues.status_code, 200, queues.text)
            self.assertIn("orders.confirm", queues.text)
            self.assertEqual((await client.get("/pgqueue/", cookies=staff)).status_code, 200)
            self.assertEqual((await client.get("/orders/999999/")).status_code, 404)  # Django
