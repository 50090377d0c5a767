"""The statements: declared once with static names, each in use, and the checked-in rendering
of them (tests/snapshots/statements.sql) up to date."""

from __future__ import annotations

import re
from pathlib import Path

import mypy.api
import pytest

import pgqueue
from pgqueue._sql import Statements
from tests.snapshots import STATEMENTS_SNAPSHOT, assert_matches, render_statements

SOURCE = Path(pgqueue.__file__).resolve().parent


def test_the_statements_snapshot_is_up_to_date() -> None:
    assert_matches(STATEMENTS_SNAPSHOT, render_statements())


def test_every_declared_statement_is_rendered_and_in_the_snapshot() -> None:
    names = list(Statements.templates())
    assert len(names) > 50
    snapshot = re.findall(r"^-- name: (\w+)$", STATEMENTS_SNAPSHOT.read_text("utf-8"), re.M)
    assert set(snapshot) == {*names, "grant"}
    stmts = Statements("s")
    for name in names:
        statement = getattr(stmts, name)
        assert isinstance(statement, str)
        assert statement.strip(), name


@pytest.mark.parametrize("name", list(Statements.templates()))
def test_every_statement_is_used(name: str) -> None:
    used = [
        path.name
        for path in SOURCE.rglob("*.py")
        if "_sql" not in path.parts and re.search(rf"\.{name}\b", path.read_text("utf-8"))
    ]
    assert used, f"no module of pgqueue runs the statement {name}: delete it from pgqueue._sql"


def test_a_misspelled_statement_fails_type_checking() -> None:
    program = (
        "from pgqueue._sql import Statements\n"
        "fetch: str = Statements('s').job_fetch\n"
        "Statements('s').job_fecth\n"
    )
    out, err, status = mypy.api.run(
        ["--config-file=", "--strict", "--no-incremental", "-c", program]
    )
    assert status == 1, out + err
    assert '<string>:3: error: "Statements" has no attribute "job_fecth"' in out, out
    assert "Found 1 error" in out, out
