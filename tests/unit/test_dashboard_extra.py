"""The dashboard is an extra: pgqueue imports without it, and the command says what to
install when it is missing."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
sys.modules["starlette"] = None  # as if the extra were not installed
import pgqueue, pgqueue.cli
assert not any(name.startswith(("starlette", "jinja2", "pgqueue.dashboard"))
               for name in sys.modules if sys.modules[name] is not None), sorted(sys.modules)
sys.exit(pgqueue.cli.main(["dashboard", "any.module:pq", "--no-auth"]))
"""


def test_pgqueue_imports_without_the_dashboard_extra_and_names_it() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1, done.stderr
    assert "pip install 'pgqueue[dashboard]'" in done.stderr
