"""The benchmark runner: ``python -m benchmarks.run [--repeat N] [--only W1,W3] [--quick]``."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from . import pgbench_ref
from .adapters import ADAPTERS
from .database import server_settings, server_version
from .machine import describe, header_lines
from .report import as_json, markdown
from .results_index import Results
from .settings import sizes
from .workloads import (
    w1_enqueue_single,
    w2_enqueue_batch,
    w3_drain,
    w4_latency,
    w5_backlog,
    w6_memory,
)
from .workloads.base import Context, Measurement

RESULTS = Path(__file__).resolve().parent / "results"
Workload = Callable[[Context], Awaitable[list[Measurement]]]
# W5 and W6 use the settings W3's sweep finds best, so W3 runs before them.
WORKLOADS: dict[str, Workload] = {
    "REF": pgbench_ref.run,
    "W1": w1_enqueue_single.run,
    "W2": w2_enqueue_batch.run,
    "W3": w3_drain.run,
    "W4": w4_latency.run,
    "W5": w5_backlog.run,
    "W6": w6_memory.run,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--repeat", type=int, help="repeats per measurement (default 3)")
    parser.add_argument("--only", help="comma-separated workloads: " + ",".join(WORKLOADS))
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and 1 repeat, for development"
    )
    parser.add_argument(
        "--libraries", help="comma-separated subset of " + ",".join(a.name for a in ADAPTERS)
    )
    args = parser.parse_args(argv)
    if args.only:
        unknown = set(args.only.upper().split(",")) - set(WORKLOADS)
        if unknown:
            parser.error(f"unknown workload(s): {', '.join(sorted(unknown))}")
    if args.libraries:
        unknown = set(args.libraries.split(",")) - {a.name for a in ADAPTERS}
        if unknown:
            parser.error(f"unknown library(ies): {', '.join(sorted(unknown))}")
    return args


def _commit() -> str | None:
    """The checked-out commit (short hash, "+dirty" with uncommitted changes), if git says."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, check=True
        ).stdout.decode()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.strip() + ("+dirty" if status.strip() else "")


async def main(argv: list[str] | None = None) -> Path:
    """Run the selected workloads; write JSON and Markdown; return the Markdown's path."""
    args = parse_args(argv)
    chosen = args.only.upper().split(",") if args.only else list(WORKLOADS)
    wanted = tuple(a for a in ADAPTERS if not args.libraries or a.name in args.libraries.split(","))
    began = time.monotonic()

    def log(line: str) -> None:
        print(f"[{time.monotonic() - began:6.1f}s] {line}", file=sys.stderr, flush=True)

    started = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    left_out: dict[str, str] = {}
    for adapter in wanted:
        reason = await adapter.prepare()
        if reason is not None:
            left_out[adapter.name] = reason
            log(f"{adapter.name} left out of this run: {reason}")
    adapters = tuple(a for a in wanted if a.name not in left_out)
    ctx = Context(sizes(args.quick, args.repeat), adapters, log)
    extra_versions = {k: v for a in adapters for k, v in a.extra_versions().items()}
    meta = {
        "started": started,
        "commit": _commit(),
        **describe(await server_version(), await server_settings(), extra_versions),
        "command": "python -m benchmarks.run " + " ".join(argv or sys.argv[1:]),
        "sizes": asdict(ctx.sizes),
        "left_out": left_out,
    }
    measurements: list[Measurement] = []
    for name in (w for w in WORKLOADS if w in chosen):
        log(f"{name} ...")
        measurements += await WORKLOADS[name](ctx)
    meta["duration_s"] = round(time.monotonic() - began, 1)
    meta["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    meta["best_settings"] = {k: v.label for k, v in ctx.best.items()}
    results = Results(measurements)
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / started.replace(":", "")
    stem.with_suffix(".json").write_text(as_json(results, meta))
    text = markdown(results, header_lines(meta))
    stem.with_suffix(".md").write_text(text)
    (RESULTS / "latest.md").write_text(text)
    print(text)
    log(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.md')}")
    return stem.with_suffix(".md")


if __name__ == "__main__":
    asyncio.run(main())
