"""The ``pgqueue`` command: migrate, migrate --status, and how errors are reported."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

import pgqueue
from pgqueue import PgQueue
from pgqueue import _migrate as migrate
from pgqueue._migrate import Migration, latest_version, load_migrations
from pgqueue.cli import _app_connections, build_parser, main

Capture = pytest.CaptureFixture[str]


def _command() -> str:
    """The installed console script, next to this interpreter."""
    found = shutil.which("pgqueue", path=str(Path(sys.executable).parent))
    assert found, "the pgqueue console script is not installed (pip install -e .)"
    return found


def test_migrate_then_status(dsn: str, schema: str, capsys: Capture) -> None:
    base = ["migrate", "--dsn", dsn, "--schema", schema]
    assert main([*base, "--status"]) == 0
    out = capsys.readouterr().out
    assert f"schema {schema}: version not installed, latest {latest_version()}" in out
    assert out.count("pending: ") == latest_version()
    assert main(base) == 0
    applied = ", ".join(str(v) for v in range(1, latest_version() + 1))
    assert capsys.readouterr().out == f"schema {schema}: applied {applied}\n"
    assert main(base) == 0
    assert capsys.readouterr().out == f"schema {schema}: up to date\n"
    assert main([*base, "--status"]) == 0
    assert capsys.readouterr().out == (
        f"schema {schema}: version {latest_version()}, latest {latest_version()}\n"
    )


def test_status_lists_pending_migrations(
    dsn: str, schema: str, capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["migrate", "--dsn", dsn, "--schema", schema]) == 0
    current = latest_version()
    extra = Migration(current + 1, "next_thing", "CREATE TABLE {schema}.next_thing (x int);")
    extended = (*load_migrations(), extra)
    monkeypatch.setattr(migrate, "load_migrations", lambda: extended)
    capsys.readouterr()
    assert main(["migrate", "--dsn", dsn, "--schema", schema, "--status"]) == 0
    assert capsys.readouterr().out == (
        f"schema {schema}: version {current}, latest {current + 1}\n"
        f"pending: {current + 1:04d}_next_thing\n"
    )
    assert main(["migrate", "--dsn", dsn, "--schema", schema]) == 0
    assert capsys.readouterr().out == f"schema {schema}: applied {current + 1}\n"


@pytest.mark.parametrize(
    ("args", "culprit"),
    [
        (["--schema", "Bad-Schema"], "invalid schema name 'Bad-Schema'"),
        (["--dsn", "postgresql://u:pw@[::1"], "invalid database connection string"),
        (["--dsn", "postgresql://u:s3cret@127.0.0.1:1/db"], "host=127.0.0.1 port=1 dbname=db"),
    ],
)
def test_errors_are_one_line_and_exit_non_zero(
    args: list[str], culprit: str, capsys: Capture
) -> None:
    assert main(["migrate", *args]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("pgqueue: error: ") and culprit in captured.err
    assert captured.err.count("\n") == 1 and "s3cret" not in captured.err


def test_the_console_script(dsn: str, schema: str) -> None:
    ok = subprocess.run(
        [_command(), "migrate", "--dsn", dsn, "--schema", schema],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"schema {schema}: applied 1")
    failed = subprocess.run(
        [_command(), "migrate", "--dsn", "postgresql://u:s3cret@127.0.0.1:1/db"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert failed.returncode == 1
    assert failed.stderr.startswith("pgqueue: error: cannot connect to PostgreSQL at host=")
    assert failed.stderr.count("\n") == 1 and "Traceback" not in failed.stderr
    assert "s3cret" not in failed.stderr


def test_usage_errors(capsys: Capture) -> None:
    for argv in ([], ["nonsense"], ["migrate", "--bogus"]):
        with pytest.raises(SystemExit) as raised:
            main(argv)
        assert raised.value.code == 2
        assert "usage: pgqueue" in capsys.readouterr().err


def test_subcommands_are_listed() -> None:
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    # Every command a user runs, and none unannounced: each is listed with what it does.
    listed = {action.dest: action.help for action in commands._choices_actions}
    assert (
        set(commands.choices)
        == set(listed)
        == {
            *("migrate", "worker", "jobs", "send", "queues", "groups", "job", "grant"),
            *("retry", "cancel", "resume", "pause", "unpause", "schedules", "subscriptions"),
            *("dashboard", "handlers"),
        }
    )
    assert all(listed.values()), listed


def test_connection_flags_reach_the_application(dsn: str) -> None:
    parser = build_parser()
    app = PgQueue(dsn, maintenance=False)
    args = parser.parse_args(["worker", "x:pq", "--no-prepare", "--listen-dsn", dsn])
    _app_connections(app, args)
    assert app._connections() == {"prepare": False, "listen": True, "listen_dsn": dsn}
    _app_connections(app, parser.parse_args(["send", "x:pq", "q", "--no-listen"]))
    assert app._connections() == {"prepare": False, "listen": False, "listen_dsn": dsn}
    untouched = PgQueue(dsn, maintenance=False, prepare=False)
    _app_connections(untouched, parser.parse_args(["worker", "x:pq"]))  # nothing given
    assert untouched._connections()["prepare"] is False
    for command in (["migrate"], ["queues"], ["grant", "r"], ["dashboard", "x:pq"]):
        assert parser.parse_args([*command, "--no-prepare"]).prepare is False


def test_migrate_and_operator_commands_without_prepared_statements(
    dsn: str, schema: str, capsys: Capture
) -> None:
    base = ["--dsn", dsn, "--schema", schema, "--no-prepare"]
    assert main(["migrate", *base]) == 0
    assert main(["queues", *base]) == 0
    assert main(["migrate", "--status", *base]) == 0
    assert "latest" in capsys.readouterr().out


def test_operator_commands(dsn: str, schema: str, capsys: Capture) -> None:
    from pgqueue import JobState, PgQueue

    assert main(["queues", "--dsn", dsn, "--schema", schema]) == 1
    assert capsys.readouterr().err == (
        f"pgqueue: error: schema {schema} is not installed here: run `pgqueue migrate` first\n"
    )
    with PgQueue(dsn, schema=schema, maintenance=False) as pq:
        pq.create_queue("emails")
        pq.create_queue("reports", concurrency=2, rate_limit=(10, 60))
        first, second, third = pq.insert(
            [{"name": "emails", "data": {"n": n}, "retry_limit": 0} for n in range(3)]
        )
        (claimed,) = pq.fetch("emails", 1)
        pq.fail(claimed.id, "smtp down")
    base = ["--dsn", dsn, "--schema", schema]

    assert main(["queues", *base]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert lines[0][:5] == ["queue", "waiting", "active", "completed", "failed"]
    assert lines[1][:5] == ["emails", "2", "0", "0", "1"] and lines[1][-1] == "no"
    assert lines[2] == ["reports", "0", "0/2", "0", "0", "-", "10/60s", "(10", "left)", "no"]

    assert main(["groups", "reports", *base]) == 1
    assert "has no groups" in capsys.readouterr().err
    assert main(["groups", "nope", *base]) == 1
    assert "no queue nope" in capsys.readouterr().err
    with PgQueue(dsn, schema=schema, maintenance=False) as pq:
        pq.update_queue("reports", group_concurrency=2, group_rate_limit=(5, 60))
        pq.insert([{"name": "reports", "group": g} for g in ("acme", "acme", "acme", "zeta")])
        pq.send("reports")
        pq.fetch("reports", 2)  # the queue's limit: "" and acme, the first groups
    assert main(["groups", "reports", *base]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert lines == [
        ["group", "waiting", "active", "rate"],
        ["acme", "2", "1/2", "5/60s", "(4", "left)"],
        ["zeta", "1", "0/2", "5/60s", "(5", "left)"],
        ["''", "0", "1/2", "5/60s", "(4", "left)"],
    ]

    assert main(["job", str(first), *base]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["id"], shown["state"], shown["data"]) == (first, "failed", {"n": 0})
    assert shown["output"]["message"] == "smtp down"
    assert main(["job", "999999", *base]) == 1
    assert "no job 999999" in capsys.readouterr().err

    # Only the failed job can be retried: the command says which were not, and fails.
    assert main(["retry", str(first), str(second), *base]) == 1
    assert capsys.readouterr().out == (
        f"retry: 1 of 2 jobs (not in a state that allows it: {second})\n"
    )
    assert main(["cancel", str(third), *base]) == 0
    assert main(["resume", str(third), *base]) == 0
    assert main(["pause", "emails", *base]) == 0
    assert main(["pause", "nope", *base]) == 1
    capsys.readouterr()
    with PgQueue(dsn, schema=schema, maintenance=False) as pq:
        jobs = [pq.get_job_by_id(i or 0) for i in (first, second, third)]
        states = [j.state for j in jobs if j]
        assert states == [JobState.retry, JobState.created, JobState.created]
        assert pq.get_queue("emails").paused  # type: ignore[union-attr]
        assert pq.fetch("emails", 10) == []
    assert main(["unpause", "emails", *base]) == 0
    assert capsys.readouterr().out == "queue emails: claimed from again\n"
    with PgQueue(dsn, schema=schema, maintenance=False) as pq:
        assert len(pq.fetch("emails", 10)) == 3


def test_a_schema_owner_migrates_and_a_granted_role_runs_everything(
    dsn: str, schema: str, conn: psycopg.Connection[Any], capsys: Capture
) -> None:
    # Least privilege: the schema's owner may not create anything in the database; the
    # workers' role has only what `pgqueue grant` gives it.
    suffix = uuid.uuid4().hex[:8]
    owner, worker = f"pgq_owner_{suffix}", f"pgq_worker_{suffix}"
    ident = sql.Identifier
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident(owner)))
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident(worker)))
    try:
        conn.execute(
            sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(ident(schema), ident(owner))
        )
        as_owner, as_worker = make_conninfo(dsn, user=owner), make_conninfo(dsn, user=worker)
        assert main(["migrate", "--dsn", as_owner, "--schema", schema]) == 0, (
            capsys.readouterr().err
        )
        assert main(["grant", worker, "--dsn", as_owner, "--schema", schema]) == 0
        capsys.readouterr()

        pq = PgQueue(as_worker, schema=schema)
        done: list[int] = []

        @pq.cron("* * * * *", name="tick")
        def tick(data: Any) -> None:
            done.append(0)

        @pq.job("add")
        def add(data: int) -> int:
            done.append(data)
            return data + 1

        with pq:  # it declares its queues and schedules, sends, works and maintains
            ids = add.insert(range(5))
            pq.work(until_empty=True)
            jobs = [pq.get_job_by_id(i or 0) for i in ids]
            assert [j.output if j else None for j in jobs] == [1, 2, 3, 4, 5]
            assert pq.maintain().errors == []
            assert pq.run_schedules() == []
            with pytest.raises(pgqueue.PgQueueError):
                pq.move_clock(60)  # the owner's alone
        assert sorted(done) == [0, 1, 2, 3, 4]
        # The worker's role cannot migrate; it says so, and who can.
        with psycopg.connect(as_owner, autocommit=True) as owner_conn:
            owner_conn.execute(
                sql.SQL("DELETE FROM {}.version WHERE version = {}").format(
                    ident(schema), sql.Literal(latest_version())
                )
            )
        with pytest.raises(pgqueue.MigrationError, match="schema's owner"):
            PgQueue(as_worker, schema=schema).start()
    finally:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(ident(schema)))
        for role in (worker, owner):
            conn.execute(sql.SQL("DROP OWNED BY {}").format(ident(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(ident(role)))


def test_the_job_command_shows_parents_children_and_attempts(
    dsn: str, schema: str, capsys: Capture
) -> None:
    from pgqueue import Flow, PgQueue

    with PgQueue(dsn, schema=schema, maintenance=False) as pq:
        pq.create_queue("steps", retry_limit=1, retry_delay=0)
        flow = Flow()
        flow.add("steps", "second", depends_on=[flow.add("steps", "first")])
        parent, child = pq.send_flow(flow)
        pq.fail(pq.fetch("steps"), "flaky")  # its first attempt fails; it waits to retry
    base = ["--dsn", dsn, "--schema", schema]
    assert main(["job", str(parent), *base]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["children"] == [child] and shown["depends_on"] is None
    assert [e["error"]["message"] for e in shown["errors"]] == ["flaky"]
    assert main(["job", str(child), *base]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["depends_on"], shown["parents_left"], shown["children"]) == ([parent], 1, [])


def test_jobs_list_finds_jobs_by_filters_page_by_page(
    dsn: str, schema: str, capsys: Capture
) -> None:
    from pgqueue import PgQueue

    with PgQueue(dsn, schema=schema, maintenance=False) as pq:
        pq.create_queue("emails", retry_limit=0)
        pq.create_queue("other")
        ids = pq.insert(
            [{"name": "emails", "data": {"to": f"u{n}"}, "group": f"g{n % 2}"} for n in range(4)]
        )
        pq.send("other", {"to": "u1"}, singleton_key="k")
        pq.fail(pq.fetch("emails"), "smtp down")
    base = ["--dsn", dsn, "--schema", schema]
    assert main(["jobs", "list", "--queue", "emails", "--state", "created", *base]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert lines[0] == [
        "id",
        "queue",
        "state",
        "attempt",
        "created",
        "started",
        "ended",
        "key",
        "group",
    ]
    assert [int(line[0]) for line in lines[1:]] == ids[1:]
    assert all(line[2] == "created" and line[5:7] == ["-", "-"] for line in lines[1:])
    assert datetime.fromisoformat(lines[1][4]).utcoffset() is not None  # ISO 8601, with zone
    assert (
        main(["jobs", "list", "--state", "failed,created", "--group", "g0", "--json", *base]) == 0
    )
    found = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(j["id"], j["state"]) for j in found] == [(ids[0], "failed"), (ids[2], "created")]
    assert found[0]["output"]["message"] == "smtp down"
    assert main(["jobs", "list", "--data", '{"to": "u1"}', "--limit", "1", "--json", *base]) == 0
    (first,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert first["id"] == ids[1]
    after = ["--after", str(first["id"]), "--json"]
    assert main(["jobs", "list", "--data", '{"to": "u1"}', *after, *base]) == 0
    (second,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (second["name"], second["singleton_key"]) == ("other", "k")
    assert main(["jobs", "list", "--state", "lost", *base]) == 1
    assert "unknown job state" in capsys.readouterr().err
    assert main(["jobs", "list", "--data", "{", *base]) == 1
    assert "--data is not JSON" in capsys.readouterr().err


def test_version_and_python_dash_m(capsys: Capture) -> None:
    import pgqueue

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"pgqueue {pgqueue.__version__}\n"
    out = subprocess.run(
        [sys.executable, "-m", "pgqueue", "--version"], capture_output=True, text=True, timeout=60
    )
    assert (out.returncode, out.stdout) == (0, f"pgqueue {pgqueue.__version__}\n")


def test_actions_take_a_queue_and_state_instead_of_ids_and_read_commands_print_json(
    dsn: str, schema: str, capsys: Capture
) -> None:
    from pgqueue import PgQueue

    with PgQueue(dsn, schema=schema, maintenance=False) as pq:
        pq.create_queue("emails", retry_limit=0, group_concurrency=2)
        ids = pq.insert([{"name": "emails", "data": n, "group": "g"} for n in range(5)])
        pq.fail(pq.fetch("emails", 2), "smtp down")
        pq.cancel(ids[4] or 0)
    base = ["--dsn", dsn, "--schema", schema]
    assert main(["retry", "--queue", "emails", *base]) == 0  # the failed ones
    assert capsys.readouterr().out == "retry: 2 of 2 jobs\n"
    assert main(["resume", "--queue", "emails", "--state", "cancelled", *base]) == 0
    assert capsys.readouterr().out == "resume: 1 of 1 jobs\n"
    assert main(["cancel", "--queue", "emails", "--state", "created,retry", *base]) == 0
    assert capsys.readouterr().out == "cancel: 5 of 5 jobs\n"
    assert main(["retry", "--queue", "emails", "--state", "cancelled", *base]) == 1
    assert capsys.readouterr().out == (
        f"retry: 0 of 5 jobs (not in a state that allows it: {', '.join(map(str, ids))})\n"
    )
    for wrong in (["retry", *base], ["retry", "1", "--queue", "emails", *base]):
        assert main(wrong) == 1
        assert "takes job ids, or --queue" in capsys.readouterr().err
    assert main(["queues", "--json", *base]) == 0
    (queue,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (queue["name"], queue["counts"]["cancelled"], queue["paused"]) == ("emails", 5, False)
    with PgQueue(dsn, schema=schema, maintenance=False) as pq:
        pq.insert([{"name": "emails", "group": "h"}, {"name": "emails", "group": "h"}])
    assert main(["groups", "emails", "--json", *base]) == 0
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == [
        {"group": "h", "waiting": 2, "active": 0, "rate_left": None}
    ]


def test_queues_watch_shows_the_queues_again_with_rates_until_interrupted(
    dsn: str, schema: str, capsys: Capture
) -> None:
    import signal

    with PgQueue(dsn, schema=schema, maintenance=False) as pq:
        pq.create_queue("watched")
        pq.insert([{"name": "watched", "data": n} for n in range(6)])
        command = [_command(), "queues", "--watch", "0.1", "--json", "--dsn", dsn]
        with subprocess.Popen(
            [*command, "--schema", schema], stdout=subprocess.PIPE, text=True
        ) as watch:
            assert watch.stdout is not None
            first = json.loads(watch.stdout.readline())
            assert (first["name"], first["waiting"]) == ("watched", 6)
            assert "completed_per_second" not in first  # no earlier look to compare with
            pq.complete(pq.fetch("watched", 6))
            for line in watch.stdout:  # each look is one line per queue: poll to a deadline
                look = json.loads(line)
                if look["counts"]["completed"] == 6:
                    break
            assert look["completed_per_second"] > 0 and look["failed_per_second"] == 0
            watch.send_signal(signal.SIGINT)
            assert watch.wait(timeout=15) == 0
    with pytest.raises(SystemExit):
        main(["queues", "--watch", "nope", "--dsn", dsn])
    assert main(["queues", "--watch", "0", "--dsn", dsn, "--schema", schema]) == 1
    assert "--watch takes 0.1 to 86400 seconds" in capsys.readouterr().err


def test_every_read_command_prints_json(dsn: str, schema: str, capsys: Capture) -> None:
    with PgQueue(dsn, schema=schema, maintenance=False) as pq:
        pq.create_queue("nightly")
        pq.create_queue("audit")
        pq.schedule("nightly", "0 3 * * *", {"full": True}, tz="Europe/Paris", key="eu")
        pq.subscribe("user.created", "audit")
        now = pq.now()
    base = ["--dsn", dsn, "--schema", schema]
    assert main(["schedules", "--json", *base]) == 0
    [schedule] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (schedule["name"], schedule["key"], schedule["data"]) == (
        "nightly",
        "eu",
        {"full": True},
    )
    upcoming = datetime.fromisoformat(schedule["next_slot"])
    assert now < upcoming and upcoming.astimezone(ZoneInfo("Europe/Paris")).hour == 3
    assert main(["schedules", *base]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == [
        "queue",
        "key",
        "cron",
        "time",
        "zone",
        "next",
        "slot",
        "last",
        "sent",
    ]
    assert table[1].startswith("nightly") and "Europe/Paris" in table[1]
    assert main(["subscriptions", "--json", *base]) == 0
    assert json.loads(capsys.readouterr().out) == {"event": "user.created", "queue": "audit"}
    assert main(["subscriptions", *base]) == 0
    assert capsys.readouterr().out == "user.created -> audit\n"
    assert main(["migrate", "--status", "--json", *base]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status == {
        "schema": schema,
        "current": latest_version(),
        "latest": latest_version(),
        "pending": [],
    }


def test_job_logs_lists_and_pipes_print_safely(dsn: str, schema: str, capsys: Capture) -> None:
    with PgQueue(dsn, schema=schema, maintenance=False) as pq:
        pq.create_queue("odd")
        [quiet, noisy] = pq.insert([{"name": "odd"}, {"name": "odd"}])
        with psycopg.connect(dsn, autocommit=True) as conn:
            logs = [
                {
                    "attempt": 1,
                    "dropped": 0,
                    "lines": [
                        {"at": "t", "level": "info", "message": "a\nfake 2026 INFO line\x1b[2J"}
                    ],
                }
            ]
            conn.execute(
                sql.SQL("UPDATE {}.job SET logs = %s WHERE id = %s").format(sql.Identifier(schema)),
                (json.dumps(logs), noisy),
            )
            conn.execute(
                sql.SQL(
                    "INSERT INTO {}.schedule (name, cron, tz, data, options, from_code, key) "
                    "VALUES ('odd', '0 3 * * *', 'Mars/Olympus', 'null', '{{}}', false, 'x')"
                ).format(sql.Identifier(schema))
            )
    base = ["--dsn", dsn, "--schema", schema]
    assert main(["job", str(noisy), "--logs", *base]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "-- attempt 1",
        "t INFO     a",
        "    fake 2026 INFO line\\x1b[2J",  # indented, its escape shown, not run
    ]
    assert main(["job", str(quiet), "--logs", *base]) == 0
    assert capsys.readouterr().err == f"job {quiet} has logged nothing\n"
    assert main(["jobs", "list", "--json", *base]) == 0
    found = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [j["id"] for j in found] == [quiet, noisy] and "logs" not in found[1]
    assert main(["schedules", *base]) == 0  # a row no host could compute is shown as such
    out, err = capsys.readouterr()
    assert "Mars/Olympus" in out.splitlines()[1] and "unknown time zone" in err
    with subprocess.Popen(
        [_command(), "queues", "--watch", "0.1", *base],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as watch:
        assert watch.stdout is not None and watch.stderr is not None
        assert watch.stdout.readline().endswith("(every 0.1 s)\n")
        watch.stdout.close()  # as `| head -1` does
        assert watch.wait(timeout=15) == 1
        assert watch.stderr.read() == ""
    assert main(["migrate", "--json", *base]) == 0
    assert json.loads(capsys.readouterr().out) == {"schema": schema, "applied": []}
