"""pgqueue's targets, checked against one run's medians (goals, not assertions)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .results_index import Results

SELF = "pgqueue"
PEERS = ("pgqueuer", "procrastinate", "pgboss")


@dataclass(frozen=True)
class Verdict:
    """One target: what it asks, what the run shows, met or not (None: not measured)."""

    target: str
    shown: str
    met: bool | None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b not in (None, 0) else None


def _check(target: str, value: float | None, ok: Callable[[float], bool], fmt: str) -> Verdict:
    if value is None:
        return Verdict(target, "not measured", None)
    return Verdict(target, fmt.format(value), ok(value))


def verdicts(results: Results) -> list[Verdict]:
    """Every target, in order."""
    r = results
    out = [
        _check(
            "W3 best >= 3x pgqueuer's best",
            _ratio(
                r.median("W3", SELF, "best settings"), r.median("W3", "pgqueuer", "best settings")
            ),
            lambda v: v >= 3,
            "{:.2f}x",
        ),
        _check(
            "W3 best >= 80% of pgbench (b)",
            _ratio(r.median("W3", SELF, "best settings"), r.median("REF", "pgbench", "b")),
            lambda v: v >= 0.8,
            "{:.0%}",
        ),
        _check("W4 p50 <= 3 ms", r.median("W4", SELF, "p50"), lambda v: v <= 3, "{:.1f} ms"),
        _check("W4 p99 <= 15 ms", r.median("W4", SELF, "p99"), lambda v: v <= 15, "{:.1f} ms"),
        _check(
            "W1 >= 90% of pgbench (a)",
            _ratio(r.median("W1", SELF), r.median("REF", "pgbench", "a")),
            lambda v: v >= 0.9,
            "{:.0%}",
        ),
    ]
    peers = [v for p in PEERS if (v := r.median("W2", p)) is not None]
    out.append(
        _check(
            "W2 >= 2x the best peer",
            _ratio(r.median("W2", SELF), max(peers) if peers else None),
            lambda v: v >= 2,
            "{:.2f}x",
        )
    )
    for key in ("waiting", "finished"):
        same_size = _ratio(r.median("W5", SELF, key), r.median("W5", SELF, "none"))
        verdict = _check(
            f"W5 ({key} backlog) >= 0.9 of W3",
            _ratio(r.median("W5", SELF, key), r.median("W3", SELF, "best settings")),
            lambda v: v >= 0.9,
            "{:.2f}",
        )
        if same_size is not None:
            verdict = Verdict(
                verdict.target,
                f"{verdict.shown} ({same_size:.2f} of the same drain without backlog)",
                verdict.met,
            )
        out.append(verdict)
    early, growth = r.median("W6", SELF, "early"), r.median("W6", SELF, "growth")
    out.append(
        _check(
            "W6 flat memory (growth <= 5% over the last 3/4 of the jobs)",
            _ratio(growth, early),
            lambda v: v <= 0.05,
            "{:+.1%}",
        )
    )
    return out
