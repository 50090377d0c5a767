"""Look measurements up by workload, key and library."""

from __future__ import annotations

from collections.abc import Iterable

from .workloads.base import Measurement


class Results:
    """The measurements of one run, indexed."""

    def __init__(self, measurements: Iterable[Measurement]) -> None:
        self.all = list(measurements)

    def find(self, workload: str, library: str, key: str = "") -> Measurement | None:
        """The measurement of ``library`` in ``workload`` with ``key``."""
        for m in self.all:
            if m.workload == workload and m.library == library and m.key == key:
                return m
        return None

    def median(self, workload: str, library: str, key: str = "") -> float | None:
        """That measurement's median, if it was measured."""
        found = self.find(workload, library, key)
        return found.summary.median if found else None
