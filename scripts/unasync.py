"""Write the blocking twins of the async source: ``src/pgqueue/_async/X.py`` becomes
``src/pgqueue/_sync/X.py``. ``--check`` writes nothing and fails if a twin is out of date.

The rules, in order:
- lines between ``# <async>`` and ``# </async>`` are dropped; lines between ``# <sync>`` and
  ``# </sync>`` are commented out in the source (``# `` after the indentation) and kept,
  uncommented, in the twin: that is where the two truly differ;
- ``async def``/``async with``/``async for`` lose ``async``, ``await`` goes, and
  ``Awaitable[X]`` becomes ``X``;
- the names in ``NAMES`` are replaced, as whole words (``AsyncPgQueue`` -> ``PgQueue``,
  ``run_async`` -> ``run_sync``, ``_compat``'s ``a``-primitives -> the blocking ones).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "src" / "pgqueue" / "_async"
TARGET = ROOT / "src" / "pgqueue" / "_sync"

NAMES = {
    "AsyncPgQueue": "PgQueue",
    "AsyncJobFunction": "JobFunction",
    "AsyncJobDecorator": "JobDecorator",
    "AsyncSender": "Sender",
    "AsyncRunner": "Runner",
    "AsyncJobHandle": "JobHandle",
    "AsyncResults": "Results",
    "AsyncShards": "Shards",
    "AsyncResultSource": "ResultSource",
    "AsyncPeriodic": "Periodic",
    "AsyncConnectionPool": "ConnectionPool",
    "AsyncNullConnectionPool": "NullConnectionPool",
    "AsyncConnection": "Connection",
    "AsyncConn": "Conn",
    "AsyncIterator": "Iterator",
    "run_async": "run_sync",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "ABackground": "Background",
    "AEvent": "Event",
    "ALock": "Lock",
    "aend": "end",
    "aspawn": "spawn",
    "ato_thread": "to_thread",
    "await_event": "wait_event",
    "_async": "_sync",
}
# Words of prose that say which flavour a docstring is about.
PHRASES = {"for asyncio code": "for blocking code", "async with": "with"}

_NAMES = re.compile(r"\b(" + "|".join(map(re.escape, NAMES)) + r")\b")
_KEYWORDS = [(re.compile(r"\basync (def|with|for)\b"), r"\1"), (re.compile(r"\bawait "), "")]


def header(source: Path) -> str:
    return (
        f"# Generated from {source.relative_to(ROOT / 'src' / 'pgqueue').as_posix()} by "
        "scripts/unasync.py: do not edit.\n"
    )


def unasync(text: str) -> str:
    """The blocking twin of async source ``text``."""
    chunks: list[tuple[str, bool]] = []  # (text, whether it is converted)
    block: str | None = None
    for line in text.splitlines(keepends=True):
        marker = line.strip()
        if marker in ("# <async>", "# <sync>"):
            block = marker[3:-1]
            continue
        if marker in ("# </async>", "# </sync>"):
            block = None
            continue
        if block == "async":
            continue
        if block == "sync":  # kept as written, uncommented
            indent = line[: len(line) - len(line.lstrip())]
            body = line[len(indent) :]
            line = "\n" if body.strip() == "#" else indent + body.removeprefix("# ")
        chunks.append((line, block != "sync"))
    return "".join(convert(chunk) if converted else chunk for chunk, converted in chunks)


def convert(text: str) -> str:
    """Async code to blocking code (the rules in the module's docstring)."""
    for phrase, replacement in PHRASES.items():
        text = text.replace(phrase, replacement)
    for pattern, replacement in _KEYWORDS:
        text = pattern.sub(replacement, text)
    text = _strip_awaitable(text)
    return _NAMES.sub(lambda m: NAMES[m.group(1)], text)


def _strip_awaitable(text: str) -> str:
    """``Awaitable[X]`` -> ``X`` (X may hold brackets of its own)."""
    while (start := text.find("Awaitable[")) >= 0:
        depth, close = 0, start + len("Awaitable")
        for close in range(start + len("Awaitable"), len(text)):
            depth += {"[": 1, "]": -1}.get(text[close], 0)
            if depth == 0:
                break
        text = text[:start] + text[start + len("Awaitable[") : close] + text[close + 1 :]
    return text.replace("Awaitable, ", "").replace(", Awaitable", "")


def tidy(text: str, path: Path) -> str:
    """``text`` with its imports sorted (the blocks leave gaps) and formatted, as ruff does
    to the hand-written source."""
    for command in (["check", "--fix-only", "--select", "I001", "--quiet"], ["format"]):
        ruff = [sys.executable, "-m", "ruff", *command, "--stdin-filename", str(path), "-"]
        done = subprocess.run(ruff, input=text, capture_output=True, text=True, check=True)
        text = done.stdout
    return text


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a twin is out of date")
    args = parser.parse_args(argv)
    stale = []
    for source in sorted(SOURCE.glob("*.py")):
        target = TARGET / source.name
        text = header(source) + unasync(source.read_text())
        if source.name == "__init__.py":
            text = header(source) + '"""The blocking twins of ``_async``, generated."""\n'
        text = tidy(text, target)
        if target.exists() and target.read_text() == text:
            continue
        stale.append(target)
        if not args.check:
            target.write_text(text)
    for path in stale:
        verb = "out of date" if args.check else "written"
        print(f"{path.relative_to(ROOT)}: {verb}", file=sys.stderr)
    if args.check and stale:
        print("run: python scripts/unasync.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
