"""The package's shape: the blocking twins are generated from the async source, and no
module imports, directly or through others, a module that imports it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pgqueue

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = Path(pgqueue.__file__).parent


def test_the_blocking_twins_are_generated_from_the_async_source() -> None:
    check = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "unasync.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr


def _imports(path: Path) -> set[str]:
    """The pgqueue modules ``path`` imports, anywhere (for type checking too: a cycle hidden
    behind TYPE_CHECKING is a cycle of the design all the same)."""
    module = ".".join(("pgqueue", *path.relative_to(PACKAGE).with_suffix("").parts))
    module = module.removesuffix(".__init__")
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            names = [f"{target}.{a.name}" for a in node.names]
            found |= {n for n in names if _is_module(n)} or {target}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("pgqueue")}
    return found


def _is_module(name: str) -> bool:
    path = PACKAGE.joinpath(*name.split(".")[1:])
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def test_no_module_imports_itself_through_others() -> None:
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(("pgqueue", *path.relative_to(PACKAGE).with_suffix("").parts))
        graph[name.removesuffix(".__init__")] = _imports(path) - {name}
    # The package's __init__ imports everything; everything else must form layers.
    graph.pop("pgqueue")
    for deps in graph.values():
        deps.discard("pgqueue")
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        for dep in sorted(graph.get(node, ())):
            if dep in path:
                cycles.append([*path[path.index(dep) :], dep])
            elif dep not in done:
                visit(dep, [*path, dep])
        done.add(node)

    done: set[str] = set()
    for node in sorted(graph):
        visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
    assert graph["pgqueue._worker"] and "pgqueue._async.queue" not in graph["pgqueue._worker"]
