"""The README's example and the examples/ scripts run as a user would run them: each in a
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


def test_the_readme_example_works_when_pasted(example_db: str, tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    section = readme.split("\n## ", 2)[1]  # the first section: the short example
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(code.splitlines()) <= 20
    script = tmp_path / "example.py"
    script.write_text(code, "utf-8")
    assert _run(script, example_db) == "Hello, Ada!\n"


def test_the_quickstart(example_db: str) -> None:
    lines = _run(ROOT / "examples" / "quickstart.py", example_db).splitlines()
    assert [re.sub(r"job \d+ ", "job N ", line) for line in lines] == [
        f"job N completed: Hello, {name}!" for name in ("Ada", "Grace", "Linus")
    ]
