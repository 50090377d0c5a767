"""What a drain (or eager mode) reports: each run of a handler and how it ended."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .._maintenance import MaintenanceResult
from ..errors import PgQueueError
from ..models import Job, JobState

__all__ = ["DrainError", "DrainTimeoutError", "Drained", "Run", "RunFailedError"]


@dataclass(frozen=True)
class Run:
    """One run of a handler: the job it ran (id, queue ``name``, ``attempt``, ``data``),
    how the run ended (``outcome``: completed, failed, expired, snoozed or cancelled), the
    job's state once that was recorded (retry after a failure with retries left), and
    ``output``: what the handler returned, or for a failure the error stored (type,
    message, traceback). ``exception`` is what the handler raised, itself.

    Example:
        ```python
        run = drain(pq).runs[0]
        assert run.ok, run.error  # the error says "Type: message"
        assert (run.name, run.attempt, run.output) == ("charge", 1, {"charged": 30})
        ```
    """

    id: int
    name: str
    attempt: int
    data: Any
    outcome: str
    state: JobState | None
    output: Any
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """Whether the handler returned (its output was recorded)."""
        return self.outcome == "completed"

    @property
    def error(self) -> str | None:
        """A failure's "Type: message" (None for a run that did not fail)."""
        if self.outcome not in ("failed", "expired"):
            return None
        if isinstance(self.output, dict):
            return f"{self.output.get('type', self.outcome)}: {self.output.get('message')}"
        return str(self.output)


@dataclass
class Drained:
    """What a drain did: the runs in the order they ran, the jobs due cron schedules sent
    (``scheduled``), the jobs still due that it could not run (``held``: their queue is
    paused, or its limits hold them back) and the maintenance pass it ran, if any.

    Example:
        ```python
        drained = drain(pq)
        assert drained.names == ["charge", "receipt"]
        assert not drained.failed and not drained.held
        assert drained.outputs("charge") == [{"charged": 30}]
        ```
    """

    runs: list[Run] = field(default_factory=list)
    scheduled: list[int] = field(default_factory=list)
    held: list[int] = field(default_factory=list)
    maintenance: MaintenanceResult | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.runs)

    def __iter__(self) -> Iterator[Run]:
        return iter(self.runs)

    @property
    def ids(self) -> list[int]:
        """The ids of the jobs run, in run order (a job run twice appears twice)."""
        return [r.id for r in self.runs]

    @property
    def names(self) -> list[str]:
        """The queues of the jobs run, in run order."""
        return [r.name for r in self.runs]

    @property
    def completed(self) -> list[Run]:
        """The runs whose handler returned."""
        return [r for r in self.runs if r.outcome == "completed"]

    @property
    def failed(self) -> list[Run]:
        """The runs that failed or expired (whether their job will retry or not)."""
        return [r for r in self.runs if r.outcome in ("failed", "expired")]

    @property
    def retried(self) -> list[Run]:
        """The failed runs whose job waits to run again (it had retries left)."""
        return [r for r in self.failed if r.state is JobState.retry]

    def outputs(self, name: str | None = None) -> list[Any]:
        """What the completed runs (of queue ``name``, or all) returned, in run order."""
        return [r.output for r in self.completed if name is None or r.name == name]

    def of(self, name: str) -> list[Run]:
        """The runs of queue ``name``."""
        return [r for r in self.runs if r.name == name]

    def extend(self, other: Drained) -> None:
        """Add what ``other`` did after what this one did."""
        self.runs += other.runs
        self.scheduled += other.scheduled
        self.held = list(other.held)
        if other.maintenance is not None:
            self.maintenance = other.maintenance


class DrainError(PgQueueError):
    """A drain could not finish: ``drained`` holds what it did until then.

    Example:
        ```python
        with pytest.raises(DrainError) as caught:
            drain(pq, max_runs=10)  # a job that sends itself forever
        assert len(caught.value.drained) == 10
        ```
    """

    def __init__(self, message: str, drained: Drained) -> None:
        super().__init__(message)
        self.drained = drained


class DrainTimeoutError(DrainError):
    """A handler did not return within the drain's ``timeout``: ``job`` is the job it ran
    (its run was recorded as failed, with no retry).

    Example:
        ```python
        with pytest.raises(DrainTimeoutError) as caught:
            drain(pq, timeout=5)
        assert caught.value.job.name == "slow-report"
        ```
    """

    def __init__(self, message: str, drained: Drained, job: Job) -> None:
        super().__init__(message, drained)
        self.job = job


class RunFailedError(DrainError):
    """A run failed and the drain (or eager mode) was asked to raise on the first failure:
    ``run`` is that run; the exception its handler raised is the cause (``__cause__``),
    traceback and all.

    Example:
        ```python
        with pytest.raises(RunFailedError) as caught:
            drain(pq, raise_errors=True)
        assert caught.value.run.name == "charge"
        assert isinstance(caught.value.__cause__, PaymentDeclined)  # what the handler raised
        ```
    """

    def __init__(self, message: str, drained: Drained, run: Run) -> None:
        super().__init__(message, drained)
        self.run = run
