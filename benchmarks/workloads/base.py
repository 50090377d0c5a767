"""What a workload gets (the run's context) and gives back (measurements)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks.adapters import Adapter, WorkerSettings
from benchmarks.settings import Sizes
from benchmarks.stats import Summary


@dataclass
class Measurement:
    """One row of results: a workload case, one library, one metric over the repeats."""

    workload: str
    case: str
    library: str
    settings: str
    metric: str
    unit: str
    summary: Summary
    higher_is_better: bool = True
    notes: list[str] = field(default_factory=list)
    key: str = ""  # names the case for lookups (targets, ratios): "best", "waiting", ...

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data = asdict(self)
        data["summary"] = self.summary.as_dict()
        return data


@dataclass
class Context:
    """The run: its sizes, the libraries, what W3's sweep found best, and a log line."""

    sizes: Sizes
    adapters: tuple[Adapter, ...]
    log: Callable[[str], None]
    best: dict[str, WorkerSettings] = field(default_factory=dict)

    def best_for(self, adapter: Adapter) -> WorkerSettings:
        """W3's winning setting for ``adapter`` (its default if W3 did not run)."""
        return self.best.get(adapter.name, adapter.default)
