"""pgqueue's pytest plugin as a user meets it: a project's tests run by pytest in a process
of their own (the plugin loads from pgqueue's entry point), on this suite's server."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.acceptance.conftest import ROOT
from tests.conftest import child_environ

APP = """
import pgqueue

pq = pgqueue.PgQueue(schema="the_apps_own")


@pq.job("greet")
def greet(name: str) -> str:
    pq.send("log", f"greeted {name}")
    return f"hello {name}"


@pq.job("log")
def log(line: str) -> str:
    return line
"""

TESTS = """
import psycopg

from pgqueue.testing import assert_sent, drain


def test_one_sends_and_drains(pgqueue_queue, pgqueue_schema):
    assert pgqueue_queue.schema == pgqueue_schema != "the_apps_own"
    pgqueue_queue.send("greet", "ada")
    assert drain(pgqueue_queue).outputs() == ["hello ada", "greeted ada"]
    assert_sent(pgqueue_queue, "log", "greeted ada", count=1)


def test_two_sees_nothing_of_test_one(pgqueue_queue):
    assert pgqueue_queue.find_jobs(archived=True) == []
    assert pgqueue_queue.get_queue("greet") is not None


def test_the_layout(pgqueue_queue, pgqueue_dsn):
    with psycopg.connect(pgqueue_dsn) as conn:
        (kind,) = conn.execute(
            "SELECT relkind FROM pg_class WHERE oid = %s::regclass",
            (f'"{pgqueue_queue.schema}".job',),
        ).fetchone()
    print(f"LAYOUT {kind}")
"""


INI = "[pytest]\nfilterwarnings = error\nasyncio_default_fixture_loop_scope = function\n"


def _pytest(
    project: Path, dsn: str | None, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {**child_environ(), **(env or {})}
    if dsn is not None:
        environ["PGQUEUE_TEST_DATABASE_URL"] = dsn
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-s", *args],
        cwd=project,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _project(tmp_path: Path, conftest: str) -> Path:
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "conftest.py").write_text(textwrap.dedent(conftest))
    (tmp_path / "test_app.py").write_text(TESTS)
    (tmp_path / "pytest.ini").write_text(INI)
    return tmp_path


# What a user's conftest takes: four lines.
CONFTEST = """
import pytest
from app import pq

@pytest.fixture
def pgqueue_app(): return pq
"""


@pytest.mark.parametrize("partition", ["0", "1"])
def test_a_users_project_runs_its_handlers_on_a_schema_per_test(
    dsn: str, tmp_path: Path, partition: str
) -> None:
    project = _project(tmp_path, CONFTEST)
    done = _pytest(project, dsn, env={"PGQUEUE_PARTITION": partition})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout
    assert f"LAYOUT {'p' if partition == '1' else 'r'}" in done.stdout


def test_the_app_may_be_named_in_the_ini_file_instead(dsn: str, tmp_path: Path) -> None:
    project = _project(tmp_path, "")
    (project / "pytest.ini").write_text(INI + "pythonpath = .\npgqueue_app = app:pq\n")
    done = _pytest(project, dsn)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_plugin_is_inert_until_a_test_asks_for_its_fixtures(tmp_path: Path) -> None:
    (tmp_path / "test_plain.py").write_text("def test_plain():\n    assert True\n")
    # A server that does not exist: nothing may try to reach it, nor start the embedded one.
    began = time.monotonic()
    done = _pytest(tmp_path, None, "--pgqueue-dsn", "postgresql://nobody@db.invalid:1/none")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
    assert time.monotonic() - began < 60
    listed = _pytest(tmp_path, None, "--fixtures")
    for name in ("pgqueue_dsn", "pgqueue_schema", "pgqueue_queue", "pgqueue_aqueue"):
        assert name in listed.stdout


def test_a_fixture_for_the_other_flavour_says_which_to_use(dsn: str, tmp_path: Path) -> None:
    (tmp_path / "test_wrong.py").write_text(
        textwrap.dedent(
            """
            import pytest
            import pgqueue

            @pytest.fixture
            def pgqueue_app():
                return pgqueue.AsyncPgQueue()

            def test_wrong(pgqueue_queue):
                pass
            """
        )
    )
    done = _pytest(tmp_path, dsn)
    assert done.returncode != 0
    assert "use the pgqueue_aqueue fixture" in done.stdout + done.stderr


def test_the_shop_examples_own_suite_passes_in_under_five_seconds(dsn: str) -> None:
    began = time.monotonic()
    done = _pytest(ROOT, dsn, "examples/shop/tests")
    took = time.monotonic() - began
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 passed" in done.stdout
    print(f"examples/shop/tests: {took:.2f}s, the process included")
    # Told, not asserted: speed is measured in benchmarks/, never asserted in tests.
    if took > 5 and not os.environ.get("CI"):
        print("examples/shop/tests took more than 5s")
