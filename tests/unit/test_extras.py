"""Each optional module says which extra to install when its dependency is missing,
instead of a bare ModuleNotFoundError naming a third-party module."""

from __future__ import annotations

import subprocess
import sys

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
