"""pgqueue.contrib.flask: the example app sends from its views, and its handlers run inside
the app's context; configuration errors are refused."""

from __future__ import annotations

import asyncio
import gc
import sys
import weakref
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from examples.flask_app import create_app
from examples.flask_app.jobs import pgqueue
from flask import Flask, current_app, g

import pgqueue as pgqueue_package
from pgqueue import InvalidInputError, InvalidOptionError, JobState, PgQueueError
from pgqueue.contrib.flask import PgQueueFlask


def config(dsn: str, schema: str, **more: Any) -> dict[str, Any]:
    return {
        "PGQUEUE_DSN": dsn,
        "PGQUEUE_SCHEMA": schema,
        "PGQUEUE_OPTIONS": {"maintenance": False},
        **more,
    }


@pytest.fixture
def app(dsn: str, schema: str) -> Iterator[Flask]:
    """The example app on this test's schema; its queue object stopped afterwards."""
    made = create_app(config(dsn, schema, SITE_NAME="Testing"))
    yield made
    pgqueue.stop(made)


def test_a_view_sends_and_the_handler_runs_in_the_app_context(app: Flask) -> None:
    client = app.test_client()
    sent = client.post("/signup", json={"email": "ada@example.com"})
    assert sent.status_code == 202
    job_id = sent.get_json()["job"]
    assert client.get(f"/jobs/{job_id}").get_json()["state"] == "created"
    pgqueue.get_queue(app).work(until_empty=True)
    shown = client.get(f"/jobs/{job_id}").get_json()
    assert shown == {
        "id": job_id,
        "state": "completed",
        "output": {
            "from": "hello@example.com",
            "to": "ada@example.com",
            "subject": "Welcome to Testing",
            "app": "examples.flask_app",
        },
    }


def test_bad_input_sends_nothing(app: Flask) -> None:
    client = app.test_client()
    assert client.post("/signup", json={"email": "nobody"}).status_code == 400
    assert client.post("/signup", data="not json").status_code == 400
    assert client.get("/jobs/12345").status_code == 404
    assert pgqueue.get_queue(app).find_jobs() == []


def test_two_apps_each_run_their_jobs_with_their_own_config(
    dsn: str, schema: str, conn: psycopg.Connection[Any]
) -> None:
    other = f"{schema}_b"
    first = create_app(config(dsn, schema, SITE_NAME="First"))
    second = create_app(config(dsn, other, SITE_NAME="Second"))
    try:
        ids = [
            a.test_client().post("/signup", json={"email": "x@example.com"}).get_json()["job"]
            for a in (first, second)
        ]
        for a in (first, second):
            pgqueue.get_queue(a).work(until_empty=True)
        subjects = []
        for a, job_id in zip((first, second), ids, strict=True):
            job = pgqueue.get_queue(a).get_job_by_id(job_id)
            assert job is not None
            subjects.append(job.output["subject"])
        assert subjects == ["Welcome to First", "Welcome to Second"]
    finally:
        pgqueue.stop(first)
        pgqueue.stop(second)
        conn.execute(f'DROP SCHEMA IF EXISTS "{other}" CASCADE')


def test_handlers_of_every_kind_run_inside_the_app_context(dsn: str, schema: str) -> None:
    ext = PgQueueFlask()
    seen: list[tuple[str, str]] = []
    torn_down: list[BaseException | None] = []

    @ext.job("sync-one")
    def sync_one(data: str) -> None:
        g.marker = data  # the app context's g: gone after the run
        seen.append(("sync", current_app.config["WHO"]))
        follow_up.send(data)  # a send from inside a handler reaches the same app

    @ext.job("follow-up")
    async def follow_up(data: str) -> None:
        await asyncio.sleep(0)
        assert "marker" not in g
        seen.append(("async", current_app.config["WHO"]))

    @ext.job("boom", retry_limit=0)
    def boom() -> None:
        raise RuntimeError(f"failed in {current_app.config['WHO']}")

    app = Flask("jobs_app")
    app.config.update(config(dsn, schema, WHO="the app"))
    app.teardown_appcontext(torn_down.append)
    ext.init_app(app)
    try:
        with app.app_context():
            sync_one.send("m")
            failing = boom.send()
            assert failing is not None
        ext.get_queue(app).work(until_empty=True)
        assert sorted(seen) == [("async", "the app"), ("sync", "the app")]
        job = ext.get_queue(app).get_job_by_id(failing)
        assert job is not None and job.state == JobState.failed
        assert "failed in the app" in job.output["message"]
        # The context of the failing run was torn down with its error.
        assert any(isinstance(e, RuntimeError) for e in torn_down)
    finally:
        ext.stop(app)


def test_a_teardown_that_raises_does_not_hide_the_handlers_error(
    dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    ext = PgQueueFlask()
    torn: list[str] = []

    @ext.job("boom", retry_limit=0)
    def boom() -> None:
        torn.append("boom")
        raise ValueError("the handler's error")

    @ext.job("aboom", retry_limit=0)
    async def aboom() -> None:
        torn.append("aboom")
        raise KeyError("the async handler's error")

    app = Flask("teardown_app")
    app.config.update(config(dsn, schema))

    @app.teardown_appcontext
    def teardown(exc: BaseException | None) -> None:
        if torn:  # (only the runs' contexts, not the test's own)
            torn.pop()
            raise RuntimeError("the teardown's error")

    ext.init_app(app)
    try:
        with app.app_context():
            sync_id, async_id = boom.send(), aboom.send()
        queue = ext.get_queue(app)
        queue.work(until_empty=True)
        for job_id, kind in ((sync_id, "ValueError"), (async_id, "KeyError")):
            job = queue.get_job_by_id(job_id or 0)
            assert job is not None and job.state == JobState.failed
            assert job.output["type"] == kind, job.output
        logged = [r for r in caplog.records if r.name == "pgqueue.flask"]
        assert len(logged) == 2 and all("teardown_app" in r.getMessage() for r in logged)
    finally:
        ext.stop(app)


def test_a_job_registered_after_init_app_reaches_the_app(dsn: str, schema: str) -> None:
    ext = PgQueueFlask()
    app = Flask("late_app")
    app.config.update(config(dsn, schema))
    ext.init_app(app)
    ran: list[str] = []

    @ext.job("late")
    def late(data: str) -> None:
        ran.append(current_app.name + ":" + data)

    @ext.cron("0 3 * * *", name="nightly")
    def nightly() -> None:
        return None

    try:
        with app.app_context():
            late.send("x")
            assert [s.name for s in ext.queue.get_schedules()] == ["nightly"]
            ext.queue.work(until_empty=True)
        assert ran == ["late_app:x"]
    finally:
        ext.stop(app)


def test_a_send_on_the_apps_own_connection_is_rolled_back_with_it(app: Flask, dsn: str) -> None:
    from examples.flask_app.jobs import Welcome, welcome_email

    with app.test_request_context(), psycopg.connect(dsn) as conn:
        welcome_email.send(Welcome(email="a@example.com"), conn=conn)
        conn.rollback()
        welcome_email.send(Welcome(email="b@example.com"), conn=conn)
        conn.commit()
        assert [j.data for j in pgqueue.queue.find_jobs()] == [{"email": "b@example.com"}]


def test_the_worker_command_runs_the_jobs(app: Flask) -> None:
    job_id = app.test_client().post("/signup", json={"email": "c@example.com"}).get_json()["job"]
    result = app.test_cli_runner().invoke(
        args=["pgqueue", "worker", "--until-empty", "--poll-interval", "0.1"]
    )
    assert result.exit_code == 0, result.output
    job = pgqueue.get_queue(app).get_job_by_id(job_id)
    assert job is not None and job.state == JobState.completed
    bad = app.test_cli_runner().invoke(args=["pgqueue", "worker", "--queues", "nope"])
    assert bad.exit_code != 0 and "nope" in bad.output


def test_the_worker_command_names_a_missing_metrics_extra(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "pgqueue.metrics", raising=False)
    monkeypatch.delattr(pgqueue_package, "metrics", raising=False)  # (imported earlier)
    result = app.test_cli_runner().invoke(
        args=["pgqueue", "worker", "--until-empty", "--metrics-port", "0"]
    )
    assert result.exit_code == 1, result.output
    assert "pip install 'pgqueue[metrics]'" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_the_worker_command_passes_the_health_timeout_on(app: Flask) -> None:
    result = app.test_cli_runner().invoke(
        args=["pgqueue", "worker", "--until-empty", "--health-port", "0", "--health-timeout", "-1"]
    )
    assert result.exit_code == 1 and "health_timeout" in result.output, result.output


def test_without_an_app_context_the_queue_is_refused() -> None:
    with pytest.raises(PgQueueError, match="application context"):
        pgqueue.queue  # noqa: B018
    with pytest.raises(PgQueueError, match="not set up"):
        PgQueueFlask().get_queue(Flask("bare"))


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"PGQUEUE_OPTIONS": ["maintenance"]}, "must be a mapping"),
        ({"PGQUEUE_OPTIONS": {"schema": "x"}}, "PGQUEUE_SCHEMA"),
        ({"PGQUEUE_OPTIONS": {"pool_size": 3}}, "pool_size"),
        ({"PGQUEUE_SCHEMA": "no spaces allowed"}, "schema"),
        ({"PGQUEUE_APP_NAME": ""}, None),  # empty: the app's name
        ({"PGQUEUE_OPTIONS": {"on_conflict": "explode"}}, "on_conflict"),
        # False values of another type are refused, not taken for "unset"
        ({"PGQUEUE_OPTIONS": []}, "must be a mapping"),
        ({"PGQUEUE_SCHEMA": False}, "schema"),
        ({"PGQUEUE_APP_NAME": 0}, "app_name"),
    ],
)
def test_bad_configuration_is_refused(
    dsn: str, schema: str, options: dict[str, Any], match: str | None
) -> None:
    app = Flask("configured")
    app.config.update({**config(dsn, schema), **options})
    ext = PgQueueFlask()
    if match is None:
        ext.init_app(app)
        assert ext.get_queue(app).app_name == "configured"
        ext.stop(app)
        return
    with pytest.raises((InvalidOptionError, InvalidInputError), match=match):
        ext.init_app(app)
    assert "pgqueue" not in app.extensions


def test_init_app_twice_and_handlers_that_are_not_functions_are_refused(
    dsn: str, schema: str
) -> None:
    ext = PgQueueFlask()
    app = Flask("twice")
    app.config.update(config(dsn, schema))
    ext.init_app(app)
    with pytest.raises(InvalidInputError, match="already"):
        ext.init_app(app)
    with pytest.raises(InvalidInputError, match="function"):
        ext.job("cls")(PgQueueFlask)

    @ext.job("one")
    def one() -> None:
        return None

    with pytest.raises(InvalidInputError, match="already registered"):
        ext.job("one")(lambda: None)


def test_two_flask_apps_on_one_schema_are_told_of_their_clash(dsn: str, schema: str) -> None:
    shop_ext, blog_ext = PgQueueFlask(), PgQueueFlask()

    @shop_ext.job("send-email")
    def shop_email(data: str) -> None:
        return None

    @blog_ext.job("send-email", retry_limit=1)
    def blog_email(data: str) -> None:
        return None

    shop, blog = Flask("shop"), Flask("blog")
    shop.config.update(config(dsn, schema))
    blog.config.update(config(dsn, schema, PGQUEUE_OPTIONS={"on_conflict": "error"}))
    shop_ext.init_app(shop)
    blog_ext.init_app(blog)
    try:
        shop_ext.get_queue(shop).work(until_empty=True)
        result = blog.test_cli_runner().invoke(args=["pgqueue", "worker", "--until-empty"])
        assert result.exit_code == 1
        assert "handlers conflict with another app's" in result.output
        assert "app 'shop'" in result.output and "app 'blog'" in result.output
        result = blog.test_cli_runner().invoke(
            args=["pgqueue", "worker", "--until-empty", "--on-conflict", "warn"]
        )
        assert result.exit_code == 0
        (warning,) = [line for line in result.output.splitlines() if "both serve" in line]
        assert "WARNING" in warning
        for name in ("blog_email", "shop_email"):  # named by module:qualname
            assert (
                f"{__name__}:test_two_flask_apps_on_one_schema_are_told_of_their_clash.<locals>.{name}"
                in warning
            )
    finally:
        shop_ext.stop(shop)
        blog_ext.stop(blog)


def test_an_app_set_up_and_dropped_is_not_kept_alive(dsn: str, schema: str) -> None:
    ext = PgQueueFlask()

    @ext.job("j")
    def j() -> None:  # its wrapper on the app's queue refers to the app
        return None

    app = Flask("short_lived")
    app.config.update(config(dsn, schema))
    ext.init_app(app)
    gone = weakref.ref(app)
    del app
    gc.collect()
    assert gone() is None
