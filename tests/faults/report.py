"""The fault suite's table for docs/faults.md, from the rows the suite appends to
``$PGQUEUE_FAULT_REPORT``: ``python -m tests.faults.report PG15.jsonl PG18.jsonl``."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(paths: list[str]) -> None:
    runs = [
        {row["scenario"]: row for row in map(json.loads, Path(p).read_text().splitlines())}
        for p in paths
    ]
    print(
        "| scenario | jobs | faults | lost | stale outcomes | stranded | reruns "
        "| recovered in (s), " + " / ".join(Path(p).stem for p in paths) + " |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for scenario, first in runs[0].items():
        rows = [run[scenario] for run in runs if scenario in run]
        total = {k: sum(r[k] for r in rows) for k in ("lost", "stale_outcomes", "stranded")}
        recovery = " / ".join(f"{r['recovery_seconds']:.1f}" for r in rows)
        reruns = " / ".join(str(r["reruns"]) for r in rows)
        note = f" ({first['notes']})" if first["notes"] else ""
        print(
            f"| {scenario}{note} | {first['jobs']:,} | {first['faults']} | {total['lost']} "
            f"| {total['stale_outcomes']} | {total['stranded']} | {reruns} | {recovery} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
