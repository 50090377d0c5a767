"""The API reference keeps up with the code: every public name has a page, a docstring
and an example, and every page is in the site's navigation."""

from __future__ import annotations
import __future__

import argparse
import ast
import importlib
import inspect
import pkgutil
import re
import textwrap
from pathlib import Path

import pytest

import pgqueue
from pgqueue import AsyncPgQueue, PgQueue, cli

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "reference"
# Modules whose public names are all exported by ``pgqueue`` and documented there.
THROUGH_PGQUEUE = {"pgqueue.errors", "pgqueue.flow", "pgqueue.models"}
NOT_AN_API = {"pgqueue.cli", "pgqueue.__main__"}  # the command line: `pgqueue --help`
# Modules besides ``pgqueue`` whose every exported class and function shows an example.
EXAMPLES_IN = (
    "pgqueue.dashboard",
    "pgqueue.metrics",
    "pgqueue.tracing",
    "pgqueue.lifecycle",
    "pgqueue.testing",
    "pgqueue.contrib.flask",
    "pgqueue.contrib.django",
    "pgqueue.contrib.django.tasks",
    "pgqueue.contrib.django.dashboard",
    "pgqueue.contrib.django.test",
)
# Exported names made on first access, not read here: ``pq`` is the Django project's queue
# object, built from Django's settings (which a unit test does not configure).
MADE_ON_ACCESS = {"pgqueue.contrib.django": {"pq"}}
_EXAMPLE = re.compile(r"^\s*Examples?:\s*$", re.MULTILINE)


def _documented() -> set[str]:
    """The objects the reference pages render (``::: name`` lines)."""
    return {
        match
        for page in REFERENCE.glob("*.md")
        for match in re.findall(r"^::: *([\w.]+) *$", page.read_text(), re.MULTILINE)
    }


def _public_modules() -> list[str]:
    """Every public module, except packages that only hold modules (``pgqueue.contrib``)
    and the modules inside a package that has a page of its own (a framework's plumbing,
    such as a Django app's ``management.commands``)."""
    found = []
    # A package that cannot be imported here (a framework not installed or not set up)
    # is still listed; its modules are not.
    walked = pkgutil.walk_packages(pgqueue.__path__, "pgqueue.", onerror=lambda name: None)
    for info in walked:
        parts = info.name.split(".")
        if any(part.startswith("_") for part in parts) or info.name in NOT_AN_API:
            continue
        if info.ispkg and not _own_names(info.name):
            continue
        ancestors = {".".join(parts[:n]) for n in range(2, len(parts))}
        if ancestors & _documented():
            continue
        found.append(info.name)
    return sorted(found)


def _own_names(package: str) -> list[str]:
    """The public names a package defines or exports itself (its submodules aside); a
    package that cannot be imported here counts as having some."""
    try:
        module = importlib.import_module(package)
    except Exception:
        return ["?"]
    exported = getattr(module, "__all__", None)
    if exported is not None:
        return list(exported)
    return [
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not inspect.ismodule(value)
        and not isinstance(value, __future__._Feature)
    ]


def _public(cls: type, kind: type | None = None) -> list[str]:
    """The public methods of ``cls`` (or its members of type ``kind``)."""
    return sorted(
        name
        for name, member in inspect.getmembers(cls)
        if not name.startswith("_")
        and (isinstance(member, kind) if kind else inspect.isfunction(member))
    )


def _examples(doc: str) -> list[str]:
    """The fenced Python blocks of a docstring's Example section."""
    section = _EXAMPLE.split(doc, maxsplit=1)
    if len(section) < 2:
        return []
    blocks = re.findall(r"^( *)```python\n(.*?)^\1```", section[1], re.MULTILINE | re.DOTALL)
    return [textwrap.dedent(code) for _, code in blocks]


def _documented_objects() -> list[tuple[str, object]]:
    """Every exported class and function, and the queue classes' public methods."""
    found: list[tuple[str, object]] = [
        (name, getattr(pgqueue, name)) for name in sorted(set(pgqueue.__all__) - {"__version__"})
    ]
    for cls in (AsyncPgQueue, PgQueue):
        found += [(f"{cls.__name__}.{name}", getattr(cls, name)) for name in _public(cls)]
    for module in map(importlib.import_module, EXAMPLES_IN):
        lazy = MADE_ON_ACCESS.get(module.__name__, set())
        assert lazy <= set(module.__all__), f"{module.__name__} no longer exports {lazy}"
        found += [
            (f"{module.__name__}.{name}", value)
            for name in module.__all__
            if name not in lazy
            and (inspect.isclass(value := getattr(module, name)) or inspect.isfunction(value))
        ]
    return found


@pytest.mark.parametrize("name", sorted(set(pgqueue.__all__) - {"__version__"}))
def test_every_exported_name_has_a_reference_entry(name: str) -> None:
    assert f"pgqueue.{name}" in _documented()


@pytest.mark.parametrize("module", _public_modules())
def test_every_public_module_has_a_reference_page(module: str) -> None:
    if module in THROUGH_PGQUEUE:
        exported = getattr(importlib.import_module(module), "__all__", [])
        documented = {name for name in exported if name in pgqueue.__all__}
        assert documented, f"{module} exports nothing through pgqueue: give it a page"
    else:
        assert module in _documented(), f"add docs/reference/<page>.md with '::: {module}'"


def test_every_reference_page_is_in_the_navigation() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in REFERENCE.glob("*.md"):
        assert f"reference/{page.name}" in nav, page.name


@pytest.mark.parametrize(("name", "obj"), _documented_objects(), ids=lambda v: str(v))
def test_every_public_name_has_an_example_that_parses(name: str, obj: object) -> None:
    doc = inspect.getdoc(obj) or ""
    assert doc.strip(), f"{name} has no docstring"
    examples = _examples(doc)
    assert examples, f"{name}'s docstring has no Example section with a ```python block"
    for code in examples:  # top-level await allowed: the asyncio flavour's examples use it
        compile(code, name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
    if name.startswith("PgQueue."):  # the blocking twin's examples await nothing
        assert "await " not in doc and "async " not in doc, name


@pytest.mark.parametrize("cls", [AsyncPgQueue, PgQueue], ids=lambda c: c.__name__)
def test_the_queue_classes_properties_have_docstrings(cls: type) -> None:
    for name in _public(cls, property):
        assert (inspect.getdoc(getattr(cls, name)) or "").strip(), f"{cls.__name__}.{name}"


# -- the guides cite what exists ------------------------------------------------------------

DOCS = ROOT / "docs"
# Options the guides describe that another change brings, as (command, option); the test
# below fails once one exists, to say it should leave this set.
PENDING: set[tuple[str, str]] = set()


def _code(text: str) -> list[str]:
    """The code of a Markdown page: fenced blocks and inline spans, with argument lists
    written as JSON or YAML (``["pgqueue", "worker", ...]``) read as a command line."""
    fenced = re.findall(r"^ *```[^\n]*\n(.*?)^ *```", text, re.MULTILINE | re.DOTALL)
    rest = re.sub(r"^ *```[^\n]*\n.*?^ *```", "", text, flags=re.MULTILINE | re.DOTALL)
    spans = re.findall(r"`([^`\n]+)`", rest)
    return [re.sub(r'\[\s*"pgqueue"[^]]*]', _argv, code) for code in [*fenced, *spans]]


def _argv(match: re.Match[str]) -> str:
    """A command written as a list of strings, as one line."""
    return " ".join(re.findall(r'"([^"]*)"', match.group(0)))


# ``pgqueue COMMAND ...`` as a shell runs it (not ``from pgqueue import ...``).
_COMMAND = re.compile(r"(?<![\w.\[\"-])(?<!from )(?<!import )pgqueue +([a-z][a-z-]*)([^;|&#]*)")


def _cli() -> tuple[set[str], dict[str, set[str]]]:
    """The command line's global options, and each subcommand's options."""
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(parser._option_string_actions), {
        name: set(sub._option_string_actions) for name, sub in commands.choices.items()
    }


def _cited_commands() -> list[tuple[str, str, str]]:
    """(page, subcommand, option or '') for each ``pgqueue COMMAND --option`` the docs show."""
    cited = []
    for page in sorted(DOCS.glob("*.md")):
        for code in _code(page.read_text()):
            for line in code.splitlines():
                for command, rest in re.findall(_COMMAND, line.split("#", 1)[0]):
                    options = re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", rest)
                    cited += [(page.name, command, option) for option in ["", *options]]
    return cited


def test_the_guides_cite_commands() -> None:
    pages = {page for page, _, _ in _cited_commands()}
    assert {"deployment.md", "monitoring.md", "upgrade.md"} <= pages


@pytest.mark.parametrize(("page", "command", "option"), sorted(set(_cited_commands())))
def test_every_cited_command_and_option_exists(page: str, command: str, option: str) -> None:
    global_options, commands = _cli()
    assert command in commands, f"{page}: there is no 'pgqueue {command}'"
    if (command, option) in PENDING:
        assert option not in commands[command], f"{option} exists now: drop it from PENDING"
        return
    known = commands[command] | global_options
    assert not option or option in known, f"{page}: 'pgqueue {command}' has no {option}"


DJANGO_COMMANDS = {"pgqueue_worker", "pgqueue_migrate"}  # names like metrics', not metrics


def _metric_names() -> set[str]:
    """What Prometheus shows of pgqueue.metrics: each family's name, with the suffixes its
    kind adds (counters ``_total``, histograms ``_bucket``, ``_sum`` and ``_count``)."""
    source = (ROOT / "src" / "pgqueue" / "metrics.py").read_text()
    families = set(re.findall(r'"(pgqueue_[a-z_]+)"', source))
    assert families, "no metric names found in metrics.py"
    counters = set(re.findall(r'counter\(\s*"(pgqueue_[a-z_]+)"', source))
    histograms = set(re.findall(r'Histogram\(\s*"(pgqueue_[a-z_]+)"', source))
    assert counters and histograms
    return (
        (families - counters)
        | {f"{name}_total" for name in counters}
        | {f"{name}{suffix}" for name in histograms for suffix in ("_bucket", "_sum", "_count")}
    )


@pytest.mark.parametrize("page", ["monitoring.md", "observability.md", "deployment.md"])
def test_every_cited_metric_exists(page: str) -> None:
    names = _metric_names()
    cited = set(re.findall(r"\bpgqueue_[a-z_]+", (DOCS / page).read_text())) - DJANGO_COMMANDS
    assert cited <= names, f"{page} cites metrics that do not exist: {sorted(cited - names)}"


# Pages that also name other programs' options: the benchmarks' scripts, Django's
# management commands, pytest's (the plugin's) options.
OTHER_PROGRAMS = {"benchmarks.md", "scaling.md", "django.md", "testing.md"}


def _inline_options() -> list[tuple[str, str]]:
    """(page, option) for each ``--option`` an inline code span of a page names."""
    found = []
    for page in sorted(DOCS.glob("*.md")):
        if page.name in OTHER_PROGRAMS:
            continue
        text = re.sub(r"^ *```[^\n]*\n.*?^ *```", "", page.read_text(), flags=re.M | re.S)
        for span in re.findall(r"`([^`\n]+)`", text):
            found += [(page.name, o) for o in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", span)]
    return sorted(set(found))


@pytest.mark.parametrize(("page", "option"), _inline_options())
def test_every_option_named_in_the_text_is_one_of_pgqueue(page: str, option: str) -> None:
    global_options, commands = _cli()
    known = global_options.union(*commands.values(), (o for _, o in PENDING))
    assert option in known, f"{page} names {option}, which no pgqueue command takes"
