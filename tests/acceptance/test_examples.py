"""The README's example and the examples/ scripts run as a user would run them: each in a
fresh process, on a database of its own, with only PGQUEUE_DATABASE_URL set."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def own_database(dsn: str) -> Iterator[str]:
    """A DSN to a new, empty database: the examples use the default schema."""
    name = f"example_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield make_conninfo(dsn, dbname=name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _run(path: Path, database: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGQUEUE_")}
    env["PGQUEUE_DATABASE_URL"] = database
    out = subprocess.run([sys.executable, str(path)], env=env, cwd=path.parent,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_readme_example_works_when_pasted(own_database: str, tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    section = readme.split("\n## ", 2)[1]  # the first section: the short example
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(code.splitlines()) <= 20
    script = tmp_path / "example.py"
    script.write_text(code, "utf-8")
    assert _run(script, own_database) == "Hello, Ada!\n"


def test_the_quickstart(own_database: str) -> None:
    lines = _run(ROOT / "examples" / "quickstart.py", own_database).splitlines()
    assert [re.sub(r"job \d+ ", "job N ", line) for line in lines] == [
        f"job N completed: Hello, {name}!" for name in ("Ada", "Grace", "Linus")
    ]
