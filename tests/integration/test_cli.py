"""The ``pgqueue`` command: migrate, migrate --status, and how errors are reported."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pgqueue import migrate
from pgqueue.cli import build_parser, main
from pgqueue.migrate import Migration, latest_version, load_migrations

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
    ok = subprocess.run([_command(), "migrate", "--dsn", dsn, "--schema", schema],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"schema {schema}: applied 1")
    failed = subprocess.run(
        [_command(), "migrate", "--dsn", "postgresql://u:s3cret@127.0.0.1:1/db"],
        capture_output=True, text=True, timeout=60,
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
    help_text = build_parser().format_help()
    assert "migrate" in help_text and "worker" in help_text

