"""What a type checker makes of pgqueue in a user's code: the README's code passes
``mypy --strict`` (the short example as it stands, the fragments together with the names
they assume declared first), and a job function's ``send`` takes its handler's data."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import mypy.api

README = Path(__file__).resolve().parents[2] / "README.md"

# What the fragments take from the reader's own code.
PREAMBLE = """\
from typing import Any
import psycopg
from pydantic import BaseModel
from pgqueue import AsyncPgQueue, Flow, Job, JobFailedError, ResultTimeoutError, RunningJob

pq = AsyncPgQueue()
dsn = email = name = p = ""
batch: list[dict[str, Any]] = []


async def fragments(conn: psycopg.AsyncConnection[Any]) -> None:
"""


def _check(program: str) -> str:
    out, err, status = mypy.api.run(
        ["--config-file=", "--strict", "--no-incremental", "-c", program]
    )
    return "" if status == 0 else out + err


def test_the_readme_code_type_checks() -> None:
    example, *fragments = re.findall(r"```python\n(.*?)```", README.read_text("utf-8"), re.S)
    assert "async def main" in example and len(fragments) >= 5
    assert _check(example) == ""
    # Handlers are declared before the fragments that send to them.
    fragments.sort(key=lambda block: "@pq." not in block)
    body = "".join(textwrap.indent(block, "    ") for block in fragments)
    assert _check(PREAMBLE + body) == ""


SENDS = {
    # handler, send, mypy's complaint (empty: none)
    "a typed payload": ("def h(data: str) -> None: ...", "h.send('x')", ""),
    "a wrong payload": (
        "def h(data: str) -> None: ...",
        "h.send(42)",
        'incompatible type "int"; expected "str"',
    ),
    "a missing payload": (
        "def h(data: str) -> None: ...",
        "h.send()",
        'Missing positional argument "data"',
    ),
    "a model": ("async def h(data: Sign) -> None: ...", "h.send(Sign(at=1))", ""),
    "a dict for a model": (
        "async def h(data: Sign) -> None: ...",
        "h.send({'at': 1})",
        'incompatible type "dict[str, int]"; expected "Sign"',
    ),
    "a default payload": ("def h(data: int = 0) -> None: ...", "h.send(1)", ""),
    "no data": ("def h() -> None: ...", "h.send()", ""),
    "data for a handler without": (
        "def h() -> None: ...",
        "h.send(1)",
        'No overload variant of "send"',
    ),
    "only the job": ("def h(job: RunningJob) -> None: ...", "h.send()", ""),
    "data and the job": (
        "def h(data: int, job: RunningJob) -> None: ...",
        "h.insert([1, 2])",
        "",
    ),
    "any data": ("def h(data: Any) -> None: ...", "h.send({'x': [1]})", ""),
}


def test_send_takes_what_the_handler_takes() -> None:
    # One program, a function per case: mypy's complaints are told apart by line.
    lines = [
        "from typing import Any",
        "from pydantic import BaseModel",
        "from pgqueue import AsyncPgQueue, PgQueue, RunningJob",
        "class Sign(BaseModel):",
        "    at: int",
        "pq = PgQueue()",
        "apq = AsyncPgQueue()",
    ]
    at = {}
    for n, (case, (handler, send, _)) in enumerate(SENDS.items()):
        queue = "apq" if handler.startswith("async") else "pq"
        lines += [f"def case_{n}() -> None:", f"    @{queue}.job('h{n}')"]
        lines += [f"    {handler}", f"    {'_ = ' if queue == 'apq' else ''}{send}"]
        at[case] = len(lines)
    found = _check("\n".join(lines) + "\n")
    wrong = []
    for case, (_, _, complaint) in SENDS.items():
        said = " ".join(re.findall(rf"^<string>:{at[case]}: error: (.*)$", found, re.M))
        if (complaint not in said) if complaint else said:
            wrong.append(f"{case}: expected {complaint!r}, mypy said {said!r}")
    assert not wrong, "\n".join(wrong)
