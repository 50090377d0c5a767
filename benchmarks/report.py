"""The run's Markdown table and JSON file."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .results_index import Results
from .targets import PEERS, SELF, verdicts
from .workloads.base import Measurement

LIBRARIES = (SELF, *PEERS)
NA = "n/a"


def _number(value: float, unit: str) -> str:
    if unit == "jobs/s" and value >= 10:
        return f"{value:,.0f}"
    return f"{value:,.1f}"


def _cell(m: Measurement | None) -> str:
    if m is None:
        return NA
    s = m.summary
    text = _number(s.median, m.unit)
    if len(s.values) > 1:
        text += f" ({_number(s.min, m.unit)}-{_number(s.max, m.unit)})"
    return text + (" †" if any("cut" in n for n in m.notes) else "")


def _ratio(a: Measurement | None, b: Measurement | None) -> str:
    if a is None or b is None or b.summary.median == 0:
        return NA
    return f"{a.summary.median / b.summary.median:.2f}x"


Row = tuple[str, str, str]  # workload, case, metric


def _rows_by_case(measurements: Iterable[Measurement]) -> dict[Row, dict[str, Measurement]]:
    rows: dict[Row, dict[str, Measurement]] = {}
    for m in measurements:
        rows.setdefault((m.workload, m.case, m.metric), {})[m.library] = m
    return rows


def results_table(results: Results) -> list[str]:
    """Libraries side by side: median (min-max) per cell, then pgqueue/peer ratios."""
    head = ["workload", "case", "metric", *LIBRARIES, *(f"{SELF}/{p}" for p in PEERS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    libs = [m for m in results.all if m.library in LIBRARIES and m.key != "sweep"]
    for (workload, case, metric), by_lib in _rows_by_case(libs).items():
        unit = next(iter(by_lib.values())).unit
        cells = [_cell(by_lib.get(lib)) for lib in LIBRARIES]
        ratios = [
            NA if metric.startswith("growth") else _ratio(by_lib.get(SELF), by_lib.get(p))
            for p in PEERS
        ]
        lines.append(
            f"| {workload} | {case} | {metric} ({unit}) | " + " | ".join(cells + ratios) + " |"
        )
    lines += _w5_ratio_row(results)
    return lines


def _w5_ratio_row(results: Results) -> list[str]:
    lines = []
    bases = (("W3", "best settings", "W3 best"), ("W5", "none", "same drain, no backlog"))
    for workload, base_key, base_label in bases:
        for key in ("waiting", "finished"):
            cells = []
            for lib in LIBRARIES:
                w5, base = results.median("W5", lib, key), results.median(workload, lib, base_key)
                cells.append(f"{w5 / base:.2f}" if w5 is not None and base else NA)
            if any(c != NA for c in cells):
                lines.append(
                    f"| W5 | {key} backlog / {base_label} | ratio | "
                    + " | ".join(cells)
                    + " |" * (1 + len(PEERS))
                )
    return lines


def settings_table(results: Results) -> list[str]:
    """Which setting each library ran with, per workload row, and the W3 sweep."""
    lines = [
        "| library | W3 sweep (jobs/s, one run each) | best | default | W4 worker |",
        "|---|---|---|---|---|",
    ]
    for lib in LIBRARIES:
        sweep = [m for m in results.all if m.library == lib and m.key == "sweep"]
        best = results.find("W3", lib, "best settings")
        default = results.find("W3", lib, "default settings")
        latency = results.find("W4", lib, "p50")
        lines.append(
            f"| {lib} | "
            + ", ".join(f"{m.settings}: {_number(m.summary.median, m.unit)}" for m in sweep)
            + f" | {best.settings if best else NA} | {default.settings if default else NA}"
            f" | {latency.settings if latency else NA} |"
        )
    return lines


def reference_table(results: Results) -> list[str]:
    """pgbench references, and how close pgqueue comes."""
    lines = ["| reference | jobs/s | pgqueue | pgqueue / reference |", "|---|---|---|---|"]
    pairs = {"a": ("W1", ""), "b": ("W3", "best settings")}
    for m in results.all:
        if m.workload != "REF":
            continue
        workload, key = pairs.get(m.key, ("", ""))
        ours = results.median(workload, SELF, key) if workload else None
        label = f"{workload}{' best' if key else ''}: " if workload else ""
        shown = f"{label}{_number(ours, 'jobs/s')}" if ours else NA
        share = f"{ours / m.summary.median:.0%}" if ours else NA
        lines.append(f"| {m.case} | {_cell(m)} | {shown} | {share} |")
    return lines


def targets_table(results: Results) -> list[str]:
    """The targets pgqueue sets itself: met or missed."""
    lines = ["| target | this run | met |", "|---|---|---|"]
    for v in verdicts(results):
        mark = NA if v.met is None else ("yes" if v.met else "**no**")
        lines.append(f"| {v.target} | {v.shown} | {mark} |")
    return lines


def notes(results: Results) -> list[str]:
    """Footnotes: drains cut at the time cap, and what W6's quarters were."""
    out = []
    for m in results.all:
        for note in m.notes:
            if m.key != "sweep" and (m.workload != "W6" or m.key == "end"):
                out.append(f"- {m.workload} {m.library} ({m.case}): {note}")
    return out


def markdown(results: Results, header: list[str]) -> str:
    """The whole report."""
    parts = [
        *header,
        "",
        "### Results",
        "",
        "median (min-max) over the repeats; ratios are pgqueue's median / the peer's, "
        "from this run (for ms and MB, below 1 is better). † = some runs were cut "
        "(see notes).",
        "",
        *results_table(results),
        "",
        "### pgbench references",
        "",
        *reference_table(results),
        "",
        "### Targets",
        "",
        *targets_table(results),
        "",
        "### Settings",
        "",
        "Producers (W1, W2, W4) run with each library's defaults.",
        "",
        *settings_table(results),
    ]
    foot = notes(results)
    if foot:
        parts += ["", "### Notes", "", *foot]
    return "\n".join(parts) + "\n"


def as_json(results: Results, meta: dict[str, Any]) -> str:
    """Everything measured, with the run's metadata."""
    return json.dumps({**meta, "measurements": [m.as_dict() for m in results.all]}, indent=2)
