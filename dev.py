#!/usr/bin/env python3
"""Set up a virtualenv for pgqueue and run the demo or the tests.

    python3 dev.py demo            # set up, then run examples/quickstart.py
    python3 dev.py test [ARGS...]  # set up, then run pytest over the whole suite
    python3 dev.py setup           # only set up .venv (pgqueue and its dev tools)

Needs only Python 3.10+: with no PGQUEUE_DATABASE_URL (demo) or PGQUEUE_TEST_DATABASE_URL
(tests) set, pgqueue starts an embedded PostgreSQL.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".pgqueue-installed"


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def setup() -> None:
    """Create .venv and install pgqueue with its dev tools, again when pyproject.toml changes."""
    if not venv_python().exists():
        print("creating .venv", flush=True)
        try:
            venv.create(VENV, with_pip=True)
        except subprocess.CalledProcessError:
            sys.exit(
                "cannot create .venv: this Python has no ensurepip "
                "(on Debian or Ubuntu: apt install python3-venv), then delete .venv and retry"
            )
    pyproject = ROOT / "pyproject.toml"
    if STAMP.exists() and STAMP.stat().st_mtime >= pyproject.stat().st_mtime:
        return
    print("installing pgqueue and its dev tools into .venv", flush=True)
    pip = [str(venv_python()), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", ".[dev]"], check=True, cwd=ROOT)
    STAMP.touch()


def main(argv: list[str]) -> int:
    command = argv[0] if argv else ""
    if command not in ("demo", "test", "setup"):
        print(__doc__)
        return 2
    if sys.version_info < (3, 10):  # noqa: UP036 (dev.py runs on whatever python3 is)
        print("pgqueue needs Python 3.10 or newer", file=sys.stderr)
        return 2
    setup()
    if command == "setup":
        return 0
    if command == "demo":
        args = [str(venv_python()), str(ROOT / "examples" / "quickstart.py")]
    else:
        args = [str(venv_python()), "-m", "pytest", *argv[1:]]
    return subprocess.run(args, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
