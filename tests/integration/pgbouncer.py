"""A real PgBouncer in front of the test server, for the tests that go through one.

``running_pgbouncer(dsn, mode)`` starts the ``pgbouncer`` binary on a free port with a
generated configuration (trust authentication, the test server behind it) and yields the
DSN that reaches the test database through it (the benchmarks use it too). The binary is
``$PGQUEUE_PGBOUNCER`` when set (e.g. a newer build than the distribution's), else
``pgbouncer`` on PATH or in /usr/sbin. Without one ``require_pgbouncer()`` skips the test,
unless ``PGQUEUE_REQUIRE_PGBOUNCER=1`` (CI sets it): then it fails.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

__all__ = [
    "BINARY_ENV",
    "PREPARED_SINCE",
    "REQUIRE_ENV",
    "carries_prepared_statements",
    "pgbouncer_binary",
    "pgbouncer_version",
    "require_pgbouncer",
    "running_pgbouncer",
]

REQUIRE_ENV = "PGQUEUE_REQUIRE_PGBOUNCER"
BINARY_ENV = "PGQUEUE_PGBOUNCER"
# The first version that carries protocol-level prepared statements in transaction mode
# (with max_prepared_statements > 0).
PREPARED_SINCE = (1, 21)


def pgbouncer_binary() -> str | None:
    """``$PGQUEUE_PGBOUNCER`` if set, else pgbouncer on PATH or in /usr/sbin (where Debian
    installs it, often not on PATH)."""
    chosen = os.environ.get(BINARY_ENV)
    if chosen:
        return shutil.which(chosen)
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")


def pgbouncer_version() -> str:
    """The chosen PgBouncer's version ("1.18.0"), or "missing"."""
    binary = pgbouncer_binary()
    if binary is None:
        return "missing"
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    first = out.stdout.splitlines()[0] if out.stdout else ""
    return first.removeprefix("PgBouncer ").strip() or "unknown"


def carries_prepared_statements(version: str) -> bool:
    """Whether PgBouncer ``version`` can keep prepared statements in transaction mode."""
    parts = version.split(".")[:2]
    if len(parts) < 2 or not all(part.isdigit() for part in parts):
        return False
    return (int(parts[0]), int(parts[1])) >= PREPARED_SINCE


def require_pgbouncer() -> str:
    """The binary; else skip the test (fail it with PGQUEUE_REQUIRE_PGBOUNCER=1)."""
    binary = pgbouncer_binary()
    if binary is not None:
        return binary
    chosen = os.environ.get(BINARY_ENV)
    if chosen:
        pytest.fail(f"{BINARY_ENV}={chosen} is not an executable")
    reason = "the pgbouncer binary is not installed (apt-get install pgbouncer)"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason}, and {REQUIRE_ENV}=1 requires it")
    pytest.skip(f"{reason}; set {REQUIRE_ENV}=1 to make this a failure")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _quoted(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def _unprivileged_user(host: str) -> str | None:
    """The user pgbouncer switches to when started as root (it refuses to run as root): the
    owner of the server's socket directory (only it may reach a private one), else
    postgres, else nobody."""
    if os.geteuid() != 0:
        return None
    if host.startswith("/"):
        owner = pwd.getpwuid(os.stat(host).st_uid).pw_name
        if owner != "root":
            return owner
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError("pgbouncer refuses to run as root and no unprivileged user exists")


@contextmanager
def running_pgbouncer(
    dsn: str, mode: str, pool_size: int = 4, max_prepared_statements: int | None = None
) -> Iterator[str]:
    """Run PgBouncer in ``mode`` ("transaction" or "session") in front of ``dsn``'s server;
    yields the DSN of the same database through it. ``max_prepared_statements`` is written
    to the configuration when given (PgBouncer 1.21+ knows it)."""
    binary = pgbouncer_binary()
    if binary is None:
        raise RuntimeError("the pgbouncer binary is not installed (apt-get install pgbouncer)")
    target = conninfo_to_dict(dsn)
    host = str(target.get("host") or "127.0.0.1")
    server_port = str(target.get("port") or "5432")
    dbname = str(target.get("dbname") or "postgres")
    user = str(target.get("user") or pwd.getpwuid(os.geteuid()).pw_name)
    password = str(target.get("password") or "")
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="pgqueue-pgbouncer-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)  # readable by the user pgbouncer switches to
        (workdir / "userlist.txt").write_text(f"{_quoted(user)} {_quoted(password)}\n")
        ini = workdir / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"{dbname} = host={host} port={server_port} dbname={dbname}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {workdir / 'userlist.txt'}\n"
            f"pool_mode = {mode}\n"
            f"default_pool_size = {pool_size}\n"
            "max_client_conn = 500\n"
            "ignore_startup_parameters = extra_float_digits\n"
            + (
                ""
                if max_prepared_statements is None
                else f"max_prepared_statements = {max_prepared_statements}\n"
            )
        )
        for path in workdir.iterdir():
            path.chmod(0o644)
        command = [binary, str(ini)]
        switch_to = _unprivileged_user(host)
        if switch_to is not None:
            command[1:1] = ["-u", switch_to]
        log_path = workdir / "pgbouncer.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        bounced = make_conninfo(dsn, host="127.0.0.1", port=port, password=password or None)
        try:
            _wait_ready(bounced, proc, log_path)
            yield bounced
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_ready(dsn: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"pgbouncer exited at start: {log_path.read_text()[-2000:]}")
        try:
            with psycopg.connect(dsn, connect_timeout=2, prepare_threshold=None) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"pgbouncer did not answer within 20s: {log_path.read_text()[-2000:]}"
                ) from None
            time.sleep(0.05)
