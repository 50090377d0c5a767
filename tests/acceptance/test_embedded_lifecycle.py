"""The embedded server lives exactly as long as a live process uses it: not less (a process
that stopped one queue object and started another still counts), not more (a user killed
with SIGKILL is noticed by the server's watchdog)."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.acceptance.conftest import Conversation, poll_until

pytestmark = pytest.mark.slow


class User(Conversation):
    """A process using the embedded server in ``directory`` (tests/acceptance/embedded_user)."""

    def __init__(self, directory: Path) -> None:
        super().__init__(
            [sys.executable, "-m", "tests.acceptance.embedded_user"],
            {"PGQUEUE_EMBEDDED_DIR": str(directory)},
        )
        assert self.ask(None) == "ready"

    def exit(self) -> None:
        self.close("exit")

    def kill(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self.proc.stdin.close()
        self.proc.stdout.close()


@pytest.fixture
def directory() -> Iterator[Path]:
    base = Path("/var/tmp") if os.geteuid() == 0 else Path(tempfile.gettempdir())
    with tempfile.TemporaryDirectory(dir=base) as path:
        os.chmod(path, 0o755)
        yield Path(path)


def running(directory: Path) -> bool:
    """Whether the embedded server of ``directory`` runs."""
    found = list(directory.glob("postgres-*/postmaster.pid"))
    if not found:
        return False
    try:
        pid = int(found[0].read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


def test_a_killed_last_user_does_not_leave_the_server_running(directory: Path) -> None:
    user = User(directory)
    user.ask("start")
    assert running(directory)
    user.kill()
    poll_until(lambda: not running(directory), 30, "the watchdog to stop the server")


def test_the_server_outlives_every_user_but_the_last_live_one(directory: Path) -> None:
    first, second, third = User(directory), User(directory), User(directory)
    first.ask("start")
    second.ask("start")
    assert first.ask("stop") == "stopped"
    assert second.ask("query") == 1  # still up for the second
    # A process that let go of the server and takes it up again counts as a user again.
    assert first.ask("start") and first.ask("stop") == "stopped" and first.ask("start")
    second.ask("stop")
    third.ask("start")
    third.ask("stop")
    assert first.ask("query") == 1  # up for the first, whatever the others did
    first.ask("stop")
    poll_until(lambda: not running(directory), 30, "the server to stop with its last user")
    for user in (first, second, third):
        user.exit()


def test_the_embedded_server_keeps_its_wal_small(directory: Path) -> None:
    from pgqueue._embedded import MAX_WAL_MB

    user = User(directory)
    dsn = user.ask("start")
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT setting::integer FROM pg_settings WHERE name = 'max_wal_size'"
        ).fetchone()
    assert row == (MAX_WAL_MB,)
    user.ask("stop")
    user.exit()
