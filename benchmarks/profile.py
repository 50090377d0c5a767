"""Profile pgqueue's W1 producer and W3 worker with py-spy; print pgqueue's hot spots.

    python -m benchmarks.profile W1 [--jobs 10000]
    python -m benchmarks.profile W3 [--jobs 50000] [--concurrency 10]

py-spy samples the process (CPU time only: idle waits are not sampled) and writes collapsed
stacks under results/; the summary attributes each sample to the deepest frame in
pgqueue's own code, and to the package of the leaf frame.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import psycopg

from .adapters import WorkerSettings
from .adapters.pgqueue_adapter import PgqueueAdapter
from .database import fresh_database, vacuum_analyze
from .drain import remaining
from .process import ROOT

RESULTS = Path(__file__).resolve().parent / "results"
IDLE_LEAVES = ("selectors.py", "threading.py", "concurrent/futures/thread.py")
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*)(?::\d+)?\)$")


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return found


def _frames(stack: str) -> list[tuple[str, str]]:
    out = []
    for frame in stack.split(";"):
        match = _FRAME.match(frame)
        if match:
            out.append((match["func"], match["file"]))
        else:
            out.append((frame, ""))
    return out


def _own(path: str) -> str | None:
    """``module.py`` when ``path`` is pgqueue's own source (py-spy shortens paths to
    ``pgqueue/core.py``), else None."""
    parts = path.split("/")
    if "pgqueue" not in parts[:-1]:
        return None
    return "/".join(parts[len(parts) - parts[::-1].index("pgqueue") :])


def _package(path: str) -> str:
    if _own(path):
        return "pgqueue"
    for name in ("psycopg_pool", "psycopg", "pydantic", "asyncio", "json", "logging", "uuid"):
        if f"/{name}/" in path or path.endswith(f"/{name}.py"):
            return name
    return Path(path).stem or "other"


def summarize(raw: Path, top: int = 15) -> str:
    """Hot spots from py-spy's raw (collapsed) output."""
    attributed: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = idle = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = _frames(stack)
        if not frames or frames[-1][1].endswith(IDLE_LEAVES):
            idle += count  # a thread parked in select() or a lock: not work
            continue
        total += count
        own = [i for i, (_, file) in enumerate(frames) if _own(file)]
        names = [f"{_own(frames[i][1])}:{frames[i][0]}" for i in own]
        for name in set(names):
            inclusive[name] += count
        if own:
            below = frames[own[-1] + 1][1] if own[-1] + 1 < len(frames) else ""
            attributed[f"{names[-1]} -> {_package(below) if below else 'self'}"] += count
        else:
            attributed["(outside pgqueue)"] += count
        leaves[_package(frames[-1][1]) if frames else "?"] += count
    if total == 0:
        return "no samples"

    def table(counter: Counter[str]) -> list[str]:
        return [f"  {100 * n / total:5.1f}%  {name}" for name, n in counter.most_common(top)]

    return "\n".join(
        [
            f"{total} busy samples ({idle} more idle in select/locks, left out)",
            "deepest pgqueue frame on the stack -> where its time went (self, or the package "
            "it called; cli.py:_worker -> asyncio is the event loop between tasks):",
            *table(attributed),
            "inclusive (the function is anywhere on the stack):",
            *table(inclusive),
            "leaf frame by package:",
            *table(leaves),
        ]
    )


def _record(out: Path, rate: int) -> list[str]:
    """py-spy's command line to record, in raw form, the command that follows it."""
    return [_py_spy(), "record", "--format", "raw", "-r", str(rate), "-o", str(out), "--"]


async def _profile_w1(jobs: int, out: Path, rate: int) -> None:
    async with fresh_database("profile") as dsn:
        await PgqueueAdapter().install(dsn)
        argv = [
            *_record(out, rate),
            sys.executable,
            "-m",
            "benchmarks.apps.pgqueue_send",
            dsn,
            str(jobs),
        ]
        proc = await asyncio.create_subprocess_exec(*argv, cwd=ROOT)
        await proc.wait()


async def _profile_w3(jobs: int, concurrency: int, out: Path, rate: int) -> None:
    adapter = PgqueueAdapter()
    settings = WorkerSettings(f"concurrency={concurrency}", {"concurrency": concurrency})
    async with fresh_database("profile") as dsn:
        await adapter.install(dsn)
        await adapter.preload(dsn, jobs)
        await vacuum_analyze(dsn)
        env = {**os.environ, "BENCH_DSN": dsn, "PYTHONPATH": str(ROOT)}
        argv = [*_record(out, rate), *adapter.worker_command(settings)]
        spy = await asyncio.create_subprocess_exec(*argv, cwd=ROOT, env=env)
        start = time.perf_counter()
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            while True:
                left = await remaining(conn, adapter.remaining_query())
                if left == 0:
                    break
                await asyncio.sleep(0.05)
        print(
            f"W3: {jobs / (time.perf_counter() - start):,.0f} jobs/s (incl. start-up)",
            file=sys.stderr,
        )
        for child in psutil.Process(spy.pid).children():
            child.terminate()  # the worker stops gracefully; py-spy then writes its output
        await asyncio.wait_for(spy.wait(), 60)


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile")
    parser.add_argument("workload", choices=["W1", "W3"])
    parser.add_argument("--jobs", type=int)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"profile-{args.workload}.txt"
    if args.workload == "W1":
        asyncio.run(_profile_w1(args.jobs or 10_000, out, args.rate))
    else:
        asyncio.run(_profile_w3(args.jobs or 50_000, args.concurrency, out, args.rate))
    print(summarize(out))


if __name__ == "__main__":
    main()
