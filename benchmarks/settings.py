"""Sizes and knobs of a run: the defaults, and ``--quick`` ones."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

ADMIN_DSN = os.environ.get("BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
QUEUE = "bench"  # the queue every workload sends to and drains
OTHER_QUEUE = "other"  # the queue holding W5's backlog


@dataclass(frozen=True)
class Limits:
    """When to cut a drain: after ``cut_after`` s if it is on course to exceed ``cap`` s,
    and at ``cap`` s in any case."""

    cap: float
    cut_after: float

    def stop(self, elapsed: float, done: int, jobs: int) -> bool:
        """True when the drain should end now (``jobs - done`` jobs still waiting)."""
        if done >= jobs or elapsed >= self.cap:
            return True
        projected = elapsed * jobs / done if done else float("inf")
        return elapsed >= self.cut_after and projected > self.cap


@dataclass(frozen=True)
class Sizes:
    """How big each workload is and how long a drain may take."""

    repeat: int = 3
    w1_jobs: int = 10_000
    w2_jobs: int = 50_000
    w2_batch: int = 1_000
    w3_jobs: int = 50_000
    w3_sweep_jobs: int = 10_000  # each sweep setting drains this many, once
    w4_jobs: int = 300
    w4_gap: float = 0.020
    w5_jobs: int = 20_000
    w5_backlog: int = 1_000_000
    w6_jobs: int = 200_000
    w6_checkpoint: int = 50_000  # RSS here is compared with RSS at the end
    # A drain on course to take longer than drain_cap seconds is cut after drain_cut_after
    # seconds and rated on the jobs it finished (W6 runs to the end, or w6_cap).
    drain_cap: float = 30.0
    drain_cut_after: float = 5.0
    w6_cap: float = 25.0
    pgbench_seconds: int = 5
    pgbench_drain_jobs: int = 200_000

    @property
    def drain_limits(self) -> Limits:
        """The limits of W3 and W5 drains."""
        return Limits(self.drain_cap, self.drain_cut_after)

    @property
    def w6_limits(self) -> Limits:
        """W6 drains to the end, or to its cap."""
        return Limits(self.w6_cap, self.w6_cap)


DEFAULT = Sizes()
QUICK = Sizes(
    repeat=1,
    w1_jobs=1_000,
    w2_jobs=10_000,
    w3_jobs=5_000,
    w3_sweep_jobs=2_000,
    w4_jobs=50,
    w5_jobs=2_000,
    w5_backlog=50_000,
    w6_jobs=20_000,
    w6_checkpoint=5_000,
    drain_cap=10.0,
    drain_cut_after=3.0,
    w6_cap=8.0,
    pgbench_seconds=2,
    pgbench_drain_jobs=40_000,
)


def sizes(quick: bool, repeat: int | None) -> Sizes:
    """The sizes for a run; ``repeat`` overrides the repeat count."""
    chosen = QUICK if quick else DEFAULT
    return chosen if repeat is None else replace(chosen, repeat=repeat)
