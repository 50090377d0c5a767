"""The examples/ scripts run as a user would run them: each in a
fresh process, on a database of its own, with only PGQUEUE_DATABASE_URL set."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.acceptance.conftest import ROOT, env_for


def _run(path: Path, database: str) -> str:
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


def test_the_quickstart(example_db: str) -> None:
    lines = _run(ROOT / "examples" / "quickstart.py", example_db).splitlines()
    assert [re.sub(r"job \d+ ", "job N ", line) for line in lines] == [
        f"job N completed: Hello, {name}!" for name in ("Ada", "Grace", "Linus")
    ]
