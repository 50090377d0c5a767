"""Every Python block of the README type-checks with ``mypy --strict``, and the complete ones
run as pasted.

The rule the README follows: a block is either a complete program (it has an
``if __name__ == "__main__":`` guard, so that ``pgqueue worker app:pq`` can import a copy of
it without running its demo) or a fragment. A complete program is checked alone and run on a
database of its own. A fragment is checked as the body of an ``async def`` after
:data:`PRELUDE`, which declares the names fragments take for granted (``pq``, a connection,
the imports); a fragment that needs a name the prelude lacks fails here, so the prelude is the
list of what the README's fragments assume."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest

from pgqueue import PgQueue
from tests.acceptance.conftest import ROOT, env_for, poll_until

GUARD = 'if __name__ == "__main__":'

PRELUDE = """\
from typing import Any

import psycopg
from pydantic import BaseModel

from pgqueue import AsyncPgQueue, Flow, Job, JobFailedError, ResultTimeoutError, RunningJob

pq = AsyncPgQueue()
dsn = "postgresql://localhost/app"
email, name, p = "ada@example.com", "Ada", "uploads/a.png"
batch: list[dict[str, str]] = [{"to": "ada@example.com"}, {"to": "grace@example.com"}]
ids: list[int | None] = []


class Signup(BaseModel):
    email: str
    first_name: str


@pq.job("signup-email")
async def signup_email(data: Signup) -> None: ...


async def fragment(conn: psycopg.AsyncConnection[Any]) -> None:
"""


def python_blocks() -> list[str]:
    """The README's ```python blocks, in order."""
    readme = (ROOT / "README.md").read_text("utf-8")
    return re.findall(r"^```python\n(.*?)^```", readme, re.S | re.M)


def complete(block: str) -> bool:
    return GUARD in block


def as_module(block: str) -> str:
    """The module mypy checks for ``block``: itself if complete, else inside the prelude."""
    return block if complete(block) else PRELUDE + textwrap.indent(block, "    ") + "    pass\n"


def run_script(path: Path, database: str) -> str:
    out = subprocess.run(
        [sys.executable, str(path)],
        env=env_for(database),
        cwd=path.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def quickstart() -> str:
    """The first block: the short example under the set-up commands."""
    first = python_blocks()[0]
    assert complete(first)
    return first


def test_the_readme_has_blocks_of_both_kinds() -> None:
    blocks = python_blocks()
    assert len(blocks) >= 8
    assert sum(map(complete, blocks)) >= 1
    assert not all(map(complete, blocks))


def test_the_quickstart_is_short_and_guarded() -> None:
    lines = quickstart().splitlines()
    assert len(lines) <= 18
    assert lines[-2] == GUARD or lines[-2].startswith(GUARD + "  #")


@pytest.mark.slow
def test_every_block_passes_mypy_strict(tmp_path: Path) -> None:
    names = []
    for n, block in enumerate(python_blocks()):
        name = f"{'program' if complete(block) else 'fragment'}_{n}.py"
        (tmp_path / name).write_text(as_module(block), "utf-8")
        names.append(name)
    # From a directory of its own: the project's mypy settings play no part, as for a user.
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", *names],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_fragment_using_an_undeclared_name_fails_the_check(tmp_path: Path) -> None:
    """The check above can fail: a fragment is not checked in a vacuum."""
    (tmp_path / "bad.py").write_text(as_module("await pq.send(undeclared)\n"), "utf-8")
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "bad.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert out.returncode == 1
    assert 'Name "undeclared" is not defined' in out.stdout


def test_the_complete_programs_run_when_pasted(example_db: str, tmp_path: Path) -> None:
    programs = [block for block in python_blocks() if complete(block)]
    for n, program in enumerate(programs):
        script = tmp_path / f"program_{n}.py"
        script.write_text(program, "utf-8")
        output = run_script(script, example_db)
        if program == quickstart():
            assert output == "Hello, Ada!\n"


def test_the_worker_imports_a_copied_quickstart_without_running_it(
    example_db: str, tmp_path: Path
) -> None:
    """``pgqueue worker app:pq`` on a copy of the quickstart: it serves ``greet`` and sends
    nothing of its own (the demo's ``main`` is not run on import)."""
    (tmp_path / "app.py").write_text(quickstart(), "utf-8")
    log = tmp_path / "worker.log"
    with open(log, "wb") as stderr:
        worker = subprocess.Popen(
            [sys.executable, "-m", "pgqueue.cli", "worker", "app:pq", "--poll-interval", "0.2"],
            env=env_for(example_db),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    try:
        with PgQueue(example_db) as pq:
            # The worker creates the queues of its handlers as it starts.
            poll_until(lambda: pq.get_queue("greet") is not None, 60, "the worker to start")
            handle = pq.send("greet", "Grace")
            assert handle is not None
            assert handle.result(timeout=60) == "Hello, Grace!"
        poll_until(lambda: b"stopped" not in log.read_bytes(), 1, "the worker to keep running")
        worker.send_signal(signal.SIGTERM)
        stdout, _ = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate(timeout=30)
    assert worker.returncode == 0, log.read_text()
    assert b"Hello" not in stdout  # the demo's print never ran
    with psycopg.connect(example_db) as conn:
        sent = conn.execute("SELECT data FROM pgqueue.job WHERE name = 'greet'").fetchall()
    assert sent == [("Grace",)]  # the demo's "Ada" was never sent
