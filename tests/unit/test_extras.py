"""Each optional module says which extra to install when its dependency is missing,
instead of a bare ModuleNotFoundError naming a third-party module."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import sys
sys.modules[{missing!r}] = None  # as if the extra were not installed
try:
    import {module}
except ImportError as exc:
    print(exc)
    sys.exit(0)
sys.exit("imported without its dependency")
"""


@pytest.mark.parametrize(
    ("module", "missing", "extra"),
    [
        ("pgqueue.contrib.flask", "flask", "flask"),
        ("pgqueue.contrib.flask", "click", "flask"),
        ("pgqueue.contrib.django", "django", "django"),
        ("pgqueue.metrics", "prometheus_client", "metrics"),
        ("pgqueue.tracing", "opentelemetry", "tracing"),
    ],
)
def test_an_optional_module_names_its_extra(module: str, missing: str, extra: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(module=module, missing=missing)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"pip install 'pgqueue[{extra}]'" in done.stdout


def test_the_worker_command_names_the_metrics_extra(tmp_path: Path) -> None:
    (tmp_path / "jobs_app.py").write_text(
        "from pgqueue import PgQueue\n"
        "pq = PgQueue('postgresql://nobody@127.0.0.1:1/none')  # never connected\n"
    )
    script = (
        "import sys\n"
        "sys.modules['prometheus_client'] = None\n"
        "import pgqueue.cli\n"
        "sys.exit(pgqueue.cli.main(['worker', 'jobs_app:pq', '--metrics-port', '0']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 1, done.stderr
    assert "pip install 'pgqueue[metrics]'" in done.stderr
    assert "Traceback" not in done.stderr
