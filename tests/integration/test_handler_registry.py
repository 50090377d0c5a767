"""The handler registry: applications that share a schema learn, when a worker starts, that
they register different handlers for the same queue (and so take each other's jobs)."""

from __future__ import annotations

import functools
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgqueue import (
    AsyncPgQueue,
    HandlerConflictError,
    InvalidOptionError,
    PgQueue,
    PgQueueError,
)
from pgqueue._handlers import REGISTRY_RECENT, default_app, handler_id
from pgqueue.cli import main
from tests.conftest import PARTITIONED

WARNING = "both serve it on this schema"


@contextmanager
def app(dsn: str, schema: str, name: str | None = None, **options: Any) -> Iterator[PgQueue]:
    """One application's queue object on the shared schema (no background maintenance)."""
    with PgQueue(dsn, schema=schema, maintenance=False, app_name=name, **options) as queue:
        yield queue


def handler(module: str, name: str) -> Callable[[Any], None]:
    """A distinct handler that says it lives in ``module``."""

    def run(data: Any) -> None:
        return None

    run.__module__ = module
    run.__qualname__ = name
    return run


def registry(conn: psycopg.Connection[Any], schema: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        sql.SQL(
            "SELECT name, app, handler, explicit_app FROM {}.handler ORDER BY name, app"
        ).format(sql.Identifier(schema))
    ).fetchall()


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if WARNING in r.getMessage()]


def test_a_second_app_with_another_handler_for_a_queue_is_warned_at_start(
    dsn: str, schema: str, conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="pgqueue")
    with app(dsn, schema, "billing") as billing, app(dsn, schema, "crm") as crm:
        billing.job("send-email", retry_limit=5)(handler("billing.jobs", "send_email"))
        billing.job("invoice")(handler("billing.jobs", "invoice"))
        crm.job("send-email")(handler("crm.mail", "notify"))
        crm.job("lead")(handler("crm.mail", "lead"))
        billing.work(until_empty=True)
        assert warnings(caplog) == []
        crm.work(until_empty=True)
    (message,) = warnings(caplog)
    for part in (
        "queue send-email",
        "crm.mail:notify",
        "'crm'",
        "billing.jobs:send_email",
        "'billing'",
        "schema of its own",
        "rename",
    ):
        assert part in message
    worker = conn.execute(
        sql.SQL("SELECT worker FROM {}.handler WHERE app = 'billing' LIMIT 1").format(
            sql.Identifier(schema)
        )
    ).fetchone()
    assert worker is not None and worker[0] in message  # the other app's worker and host
    assert registry(conn, schema) == [
        ("invoice", "billing", "billing.jobs:invoice", True),
        ("lead", "crm", "crm.mail:lead", True),
        ("send-email", "billing", "billing.jobs:send_email", True),
        ("send-email", "crm", "crm.mail:notify", True),
    ]


def test_error_mode_refuses_to_start_and_writes_nothing(
    dsn: str, schema: str, conn: psycopg.Connection[Any]
) -> None:
    with app(dsn, schema, "billing") as billing:
        billing.job("send-email")(handler("billing.jobs", "send_email"))
        billing.work(until_empty=True)
        job_id = billing.send("send-email", {"to": "a@example.com"})
    with app(dsn, schema, "crm", on_conflict="error") as crm:
        crm.job("send-email")(handler("crm.mail", "notify"))
        crm.job("lead")(handler("crm.mail", "lead"))
        with pytest.raises(HandlerConflictError, match="queue send-email") as raised:
            crm.work(until_empty=True)
        assert not crm.working
        (conflict,) = raised.value.conflicts
        assert (conflict.other_app, conflict.other_handler) == (
            "billing",
            "billing.jobs:send_email",
        )
        job = crm.get_job_by_id(int(job_id or 0))
    assert job is not None and job.state == "created"  # not claimed
    assert [r[1] for r in registry(conn, schema)] == ["billing"]  # crm's rows not written


def test_error_mode_leaves_the_other_apps_queue_options_alone(
    dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    with app(dsn, schema, "billing") as billing:
        billing.job("send-email", retry_limit=5)(handler("billing.jobs", "send_email"))
        billing.work(until_empty=True)
    with app(dsn, schema, "crm", on_conflict="error") as crm:
        crm.job("send-email", retry_limit=0)(handler("crm.mail", "notify"))
        crm.job("lead", retry_limit=2)(handler("crm.mail", "lead"))
        with pytest.raises(HandlerConflictError):
            crm.work(until_empty=True)
        shared, own = crm.get_queue("send-email"), crm.get_queue("lead")
    assert shared is not None and shared.retry_limit == 5  # billing's, as it set it
    assert own is not None and own.retry_limit == 2  # crm's own queue is configured
    assert any("left the options of queues send-email" in w for w in warnings(caplog))


def test_error_mode_starts_when_there_is_no_conflict(
    dsn: str, schema: str, conn: psycopg.Connection[Any]
) -> None:
    with app(dsn, schema, "billing") as billing:
        billing.job("invoice")(handler("billing.jobs", "invoice"))
        billing.work(until_empty=True)
    with app(dsn, schema, "crm", on_conflict="error") as crm:
        crm.job("lead")(handler("crm.mail", "lead"))
        done: list[int] = []
        crm.job("ping")(lambda data: done.append(data))
        crm.send("ping", 1)
        crm.work(until_empty=True)
    assert done == [1]
    assert [r[1] for r in registry(conn, schema)] == ["billing", "crm", "crm"]


def test_the_same_app_restarted_or_replicated_is_not_warned(
    dsn: str, schema: str, conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="pgqueue")
    send_email = handler("shop.jobs", "send_email")
    for _ in range(2):  # restarted
        with app(dsn, schema) as shop:
            shop.job("send-email", retry_limit=3)(send_email)
            shop.work(until_empty=True)
    # Two replicas at once, one with the next release's options (a rolling deploy).
    with app(dsn, schema) as one, app(dsn, schema) as two:
        one.job("send-email", retry_limit=3)(send_email)
        two.job("send-email", retry_limit=4)(send_email)
        started = threading.Barrier(2)

        def work(queue: PgQueue) -> None:
            started.wait(10)
            queue.work(until_empty=True)

        threads = [threading.Thread(target=work, args=(q,)) for q in (one, two)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert warnings(caplog) == []
    assert registry(conn, schema) == [("send-email", "shop", "shop.jobs:send_email", False)]


def test_one_handler_shared_by_two_named_apps_is_not_a_conflict(
    dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="pgqueue")
    cleanup = handler("common.tasks", "cleanup")
    with app(dsn, schema, "billing") as billing, app(dsn, schema, "crm") as crm:
        billing.job("cleanup", expire_in=60)(cleanup)
        crm.job("cleanup", expire_in=60)(cleanup)
        billing.work(until_empty=True)
        crm.work(until_empty=True)
        assert warnings(caplog) == []
        crm.job("other")(handler("crm.mail", "other"))  # registered later: nothing changes
    assert warnings(caplog) == []


def test_apps_are_told_apart_by_the_handlers_package_when_unnamed(
    dsn: str, schema: str, conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="pgqueue")
    with app(dsn, schema) as billing, app(dsn, schema) as crm:
        billing.job("send-email")(handler("billing.jobs", "send_email"))
        crm.job("send-email")(handler("crm.mail.jobs", "send_email"))
        billing.work(until_empty=True)
        crm.work(until_empty=True)
    (message,) = warnings(caplog)
    assert "app 'crm'" in message and "app 'billing'" in message
    assert [r[1:] for r in registry(conn, schema)] == [
        ("billing", "billing.jobs:send_email", False),
        ("crm", "crm.mail.jobs:send_email", False),
    ]


def test_the_first_app_learns_of_the_second_when_it_refreshes(
    dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="pgqueue")
    with app(dsn, schema, "billing") as billing, app(dsn, schema, "crm") as crm:
        billing.job("send-email")(handler("billing.jobs", "send_email"))
        crm.job("send-email")(handler("crm.mail", "notify"))
        billing.work(until_empty=True)
        crm.work(until_empty=True)
        caplog.clear()
        billing.work(until_empty=True)  # a restart, or the periodic refresh
    (message,) = warnings(caplog)
    assert message.startswith("queue send-email: handler billing.jobs:send_email of app")


@pytest.mark.parametrize(
    ("pattern", "name", "clash"),
    [
        ("emails.*", "emails.welcome", True),
        ("emails.*", "sms.welcome", False),
        ("emails.[ab]x", "emails.ax", True),
        # The database's rough cut of [ab] is any character: the exact match refuses it.
        ("emails.[ab]x", "emails.cx", False),
    ],
)
def test_a_pattern_handler_conflicts_with_the_queues_it_would_serve(
    dsn: str,
    schema: str,
    conn: psycopg.Connection[Any],
    caplog: pytest.LogCaptureFixture,
    pattern: str,
    name: str,
    clash: bool,
) -> None:
    caplog.set_level("INFO", logger="pgqueue")
    with app(dsn, schema, "mailer") as mailer:
        mailer.job(pattern)(handler("mailer.jobs", "any_email"))
        mailer.work(until_empty=True)
    # Both ways round: the exact handler's worker starts after the pattern's, and before.
    with app(dsn, schema, "signup", on_conflict="error") as signup:
        signup.job(name)(handler("signup.jobs", "welcome"))
        if clash:
            with pytest.raises(HandlerConflictError, match=re.escape(f"queue {name} / {pattern}")):
                signup.work(until_empty=True)
        else:
            signup.work(until_empty=True)
    assert sorted(r[1] for r in registry(conn, schema)) == (
        ["mailer"] if clash else ["mailer", "signup"]
    )
    with app(dsn, schema, "signup") as signup:
        signup.job(name)(handler("signup.jobs", "welcome"))
        signup.work(until_empty=True)
    caplog.clear()
    with app(dsn, schema, "mailer") as mailer:
        mailer.job(pattern)(handler("mailer.jobs", "any_email"))
        mailer.work(until_empty=True)
    assert len(warnings(caplog)) == int(clash)
    if clash:
        assert f"queue {pattern} / {name}" in warnings(caplog)[0]


def test_registrations_age_out_by_the_database_clock(
    dsn: str, schema: str, conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="pgqueue")
    with app(dsn, schema, "old") as old:
        old.job("send-email")(handler("old.jobs", "send_email"))
        old.work(until_empty=True)
        old.move_clock(-86400)  # a clock moved back keeps it recent
        assert old.maintain().handlers == 0
    with app(dsn, schema, "new") as new:
        new.job("send-email")(handler("new.jobs", "send_email"))
        new.work(until_empty=True)
        assert len(warnings(caplog)) == 1
        new.set_clock(None)
        new.move_clock(REGISTRY_RECENT + 1)  # the old app's worker is long gone
        caplog.clear()
        new.work(until_empty=True)  # refreshes its own row
        assert warnings(caplog) == []
        assert new.maintain().handlers == 1
    assert [r[1] for r in registry(conn, schema)] == ["new"]


def test_two_apps_starting_at_the_same_instant_see_each_other(
    dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="pgqueue")
    with app(dsn, schema, "billing") as billing, app(dsn, schema, "crm") as crm:
        billing.job("send-email")(handler("billing.jobs", "send_email"))
        crm.job("send-email")(handler("crm.mail", "notify"))
        for _ in range(5):
            caplog.clear()
            with psycopg.connect(dsn, autocommit=True) as c:
                c.execute(sql.SQL("DELETE FROM {}.handler").format(sql.Identifier(schema)))
            started = threading.Barrier(2)

            def work(queue: PgQueue, started: threading.Barrier) -> None:
                started.wait(10)
                queue.work(until_empty=True)

            threads = [threading.Thread(target=work, args=(q, started)) for q in (billing, crm)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert len(warnings(caplog)) == 1  # the later of the two, whichever it was


def test_a_worker_registers_the_handlers_it_serves_only(
    dsn: str, schema: str, conn: psycopg.Connection[Any]
) -> None:
    with app(dsn, schema, "billing") as billing:
        billing.job("invoice")(handler("billing.jobs", "invoice"))
        billing.job("refund")(handler("billing.jobs", "refund"))
        billing.work(queues=["refund"], until_empty=True)
    assert [r[0] for r in registry(conn, schema)] == ["refund"]


def test_many_handlers_register_in_one_statement(
    dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="pgqueue")
    # In the partitioned layout each queue is a table, which a worker's looks lock.
    many = 200 if PARTITIONED else 2000
    with app(dsn, schema, "big") as big, app(dsn, schema, "small") as small:
        for i in range(many):
            big.job(f"q{i}")(handler("big.jobs", f"h{i}"))
        big.work(until_empty=True)
        small.job(f"q{many - 1}")(handler("small.jobs", "last"))
        small.job("q*9")(handler("small.jobs", "nines"))
        began = time.monotonic()
        small.work(until_empty=True)
        assert time.monotonic() - began < 60
    messages = warnings(caplog)
    assert sum(f"queue q{many - 1}:" in m for m in messages) == 1
    # The pattern q*9 matches 200 of big's queues: one line for each.
    assert sum(m.startswith("queue q*9 / q") for m in messages) == many // 10


@pytest.mark.parametrize(
    ("option", "value"),
    [("on_conflict", "raise"), ("on_conflict", None), ("app_name", ""), ("app_name", 7)],
)
def test_bad_registry_options_are_refused(dsn: str, schema: str, option: str, value: Any) -> None:
    with pytest.raises(InvalidOptionError, match=option):
        PgQueue(dsn, schema=schema, **{option: value})


@pytest.mark.parametrize(("option", "value"), [("on_conflict", "Error"), ("app_name", "a\x00b")])
def test_bad_registry_options_set_after_construction_are_refused_by_work(
    dsn: str, schema: str, conn: psycopg.Connection[Any], option: str, value: Any
) -> None:
    with app(dsn, schema, "billing") as billing:
        billing.job("send-email")(handler("billing.jobs", "send_email"))
        setattr(billing, option, value)
        with pytest.raises(InvalidOptionError, match=option):
            billing.work(until_empty=True)
    assert registry(conn, schema) == []


def test_handler_ids_and_default_apps() -> None:
    assert handler_id(handler("a.b.c", "Outer.run")) == "a.b.c:Outer.run"
    assert default_app(handler("a.b.c", "f")) == "a"
    assert default_app(handler("__main__", "f")) not in ("", "__main__")


def test_the_command_line_shows_the_registry(
    dsn: str, schema: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with app(dsn, schema, "billing") as billing, app(dsn, schema, "crm") as crm:
        billing.job("send-email")(handler("billing.jobs", "send_email"))
        billing.job("invoice")(handler("billing.jobs", "invoice"))
        crm.job("send-email")(handler("crm.mail", "notify"))
        billing.work(until_empty=True)
        crm.work(until_empty=True)
        assert {(h.name, h.app, h.recent) for h in crm.get_handlers()} == {
            ("invoice", "billing", True),
            ("send-email", "billing", True),
            ("send-email", "crm", True),
        }
    capsys.readouterr()
    assert main(["handlers", "--dsn", dsn, "--schema", schema, "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted((r["name"], r["app"], r["conflict"]) for r in rows) == [
        ("invoice", "billing", False),
        ("send-email", "billing", True),
        ("send-email", "crm", True),
    ]
    assert main(["handlers", "--dsn", dsn, "--schema", schema]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["queue", "app", "handler"]
    assert sum(line.rstrip().endswith("yes") for line in table) == 2


def test_a_renamed_app_with_the_same_handlers_is_not_warned(
    dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="pgqueue")
    send_email = handler("shop.jobs", "send_email")
    for name in ("shop", "storefront"):
        with app(dsn, schema, name) as shop:
            shop.job("send-email", retry_limit=3)(send_email)
            shop.work(until_empty=True)
    assert warnings(caplog) == []
    # Renamed and changed at once: the old name's row is another app's until it ages out.
    with app(dsn, schema, "store") as store:
        store.job("send-email", retry_limit=4)(send_email)
        store.work(until_empty=True)
    assert len(warnings(caplog)) == 2  # against shop's and storefront's rows


class Mailer:
    def __call__(self, data: Any) -> None:
        return None


def test_partials_and_callable_objects_are_named_by_what_they_call() -> None:
    def send(data: Any, sender: str = "") -> None:
        return None

    send.__module__ = "shop.jobs"
    partial = functools.partial(send, sender="x")
    assert handler_id(partial) == handler_id(send) == f"shop.jobs:{send.__qualname__}"
    assert default_app(partial) == "shop"
    assert handler_id(Mailer()) == f"{__name__}:Mailer"


def test_a_running_worker_refreshes_its_rows_and_learns_of_a_newcomer(
    dsn: str, schema: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level("INFO", logger="pgqueue")
    monkeypatch.setattr("pgqueue._worker.REGISTRY_REFRESH", 0.05)
    with app(dsn, schema, "billing") as billing, app(dsn, schema, "crm") as crm:
        billing.job("send-email")(handler("billing.jobs", "send_email"))
        crm.job("send-email")(handler("crm.mail", "notify"))
        worker = threading.Thread(target=billing.work, kwargs={"poll_interval": 0.05})
        worker.start()
        try:
            deadline = time.monotonic() + 30
            while not any(h.app == "billing" for h in crm.get_handlers()):
                assert time.monotonic() < deadline, "billing's worker did not register"
                time.sleep(0.02)
            crm.work(until_empty=True)  # warns at its start
            first = next(h.seen_at for h in crm.get_handlers() if h.app == "billing")
            while len(warnings(caplog)) < 2 or not any(
                h.app == "billing" and h.seen_at > first for h in crm.get_handlers()
            ):
                assert time.monotonic() < deadline, "billing's worker did not refresh"
                time.sleep(0.02)
        finally:
            billing.stop_working()
            worker.join(30)
    crm_side, billing_side = warnings(caplog)[:2]
    assert "handler crm.mail:notify of app 'crm'" in crm_side
    assert "handler billing.jobs:send_email of app 'billing'" in billing_side
    assert len(warnings(caplog)) == 2  # each refresh after that one stays quiet


def test_a_registry_that_cannot_be_written_is_logged_and_the_worker_goes_on(
    dsn: str, schema: str, conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="pgqueue")
    with app(dsn, schema, "billing") as billing:
        done: list[int] = []
        billing.job("ping")(done.append)
        billing.send("ping", 1)
        conn.execute(sql.SQL("DROP TABLE {}.handler").format(sql.Identifier(schema)))
        billing.work(until_empty=True)
        assert done == [1]
    assert any("could not write this worker's handlers" in r.getMessage() for r in caplog.records)
    with app(dsn, schema, "billing", on_conflict="error") as strict:
        strict.job("ping")(done.append)
        strict.send("ping", 2)
        with pytest.raises(PgQueueError):  # unchecked, it does not start
            strict.work(until_empty=True)
        assert done == [1]


def test_a_registration_stuck_elsewhere_does_not_stop_a_start(
    dsn: str,
    schema: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level("INFO", logger="pgqueue")
    monkeypatch.setattr("pgqueue._handlers.REGISTRY_LOCK_TIMEOUT", 0.2)
    with app(dsn, schema, "billing") as billing, psycopg.connect(dsn) as stuck:
        done: list[int] = []
        billing.job("ping")(done.append)
        billing.send("ping", 1)
        stuck.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))", [f"pgqueue.handlers.{schema}"]
        )  # and its transaction stays open
        billing.work(until_empty=True)
        assert done == [1]
        assert any("could not write this worker's" in r.getMessage() for r in caplog.records)
        strict = PgQueue(dsn, schema=schema, maintenance=False, on_conflict="error")
        with strict:
            strict.job("ping")(done.append)
            with pytest.raises(PgQueueError, match="lock"):
                strict.work(until_empty=True)
        stuck.rollback()
        billing.work(until_empty=True)  # registers now
        assert [h.app for h in billing.get_handlers()] == ["billing"]


async def test_an_async_worker_warns_too(
    dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="pgqueue")
    async with (
        AsyncPgQueue(dsn, schema=schema, maintenance=False, app_name="billing") as billing,
        AsyncPgQueue(dsn, schema=schema, maintenance=False, app_name="crm") as crm,
        AsyncPgQueue(
            dsn, schema=schema, maintenance=False, app_name="crm", on_conflict="error"
        ) as strict,
    ):
        billing.job("send-email")(handler("billing.jobs", "send_email"))
        crm.job("send-email")(handler("crm.mail", "notify"))
        strict.job("send-email")(handler("crm.mail", "notify"))
        await billing.work(until_empty=True)
        await crm.work(until_empty=True)
        assert len(warnings(caplog)) == 1
        with pytest.raises(HandlerConflictError):
            await strict.work(until_empty=True)
