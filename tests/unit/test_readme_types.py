"""The README's code passes ``mypy --strict`` as a user's code would: the short example as it
stands, and the fragments together, with the names they assume declared first."""

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
from pgqueue import AsyncPgQueue, RunningJob

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


def test_the_check_catches_a_wrong_payload() -> None:
    program = PREAMBLE + textwrap.indent(
        '@pq.job("greet")\nasync def greet(name: str) -> None: ...\nawait greet.send(42)\n',
        "    ",
    )
    assert 'incompatible type "int"; expected "str | None"' in _check(program)
