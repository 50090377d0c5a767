"""A real PgBouncer in front of the test server, for the tests that go through one.

``running_pgbouncer(dsn, mode)`` starts the ``pgbouncer`` binary on a free port with a
generated configuration (trust authentication, the test server behind it) and yields the
DSN that reaches the test database through it (the benchmarks use it too). Without the
binary ``require_pgbouncer()`` skips the test, unless ``PGQUEUE_REQUIRE_PGBOUNCER=1`` (CI
sets it): then it fails.
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
    "REQUIRE_ENV",
    "pgbouncer_binary",
    "pgbouncer_version",
    "require_pgbouncer",
    "running_pgbouncer",
]

REQUIRE_ENV = "PGQUEUE_REQUIRE_PGBOUNCER"


def pgbouncer_binary() -> str | None:
    """The pgbouncer executable (Debian installs it in /usr/sbin, often not on PATH)."""
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")


def pgbouncer_version() -> str:
    """The installed PgBouncer's version ("1.18.0"), or "missing"."""
    binary = pgbouncer_binary()
    if binary is None:
        return "missing"
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    first = out.stdout.splitlines()[0] if out.stdout else ""
    return first.removeprefix("PgBouncer ").strip() or "unknown"


def require_pgbouncer() -> str:
    """The binary; else skip the test (fail it with PGQUEUE_REQUIRE_PGBOUNCER=1)."""
    binary = pgbouncer_binary()
    if binary is not None:
        return binary
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
def running_pgbouncer(dsn: str, mode: str, pool_size: int = 4) -> Iterator[str]:
    """Run PgBouncer in ``mode`` ("transaction" or "session") in front of ``dsn``'s server;
    yields the DSN of the same database through it."""
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
