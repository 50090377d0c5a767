"""What a queue object tells observers (metrics, tracing) of its sends and its workers' runs.

Nothing here is used unless an observer is attached (``pgqueue.metrics.enable``,
``pgqueue.tracing.instrument``): the producing methods and the worker check one attribute,
None by default. An observer that raises is logged and never breaks what it observes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from ._executor import Outcome, RunningJob

__all__ = ["Observer", "Observers", "WorkerView", "combine"]

log = logging.getLogger("pgqueue")


class WorkerView(Protocol):
    """What an observer may read of a running worker."""

    @property
    def busy(self) -> int:
        """Runs under way."""

    @property
    def slots(self) -> int:
        """Runs it may have under way at once (its concurrency)."""


class Observer:
    """Told of sends and runs; each method does nothing here. Tokens returned by the
    ``*_started`` methods come back to the matching ``*_ended`` call."""

    def send_started(self, names: Sequence[str]) -> object:
        """Jobs of these queues (one name per job) are about to be sent."""
        return None

    def send_ended(
        self,
        token: object,
        names: Sequence[str],
        ids: Sequence[int | None],
        error: BaseException | None,
    ) -> None:
        """The send ended: the ids of the jobs written (None where one was blocked), or
        the error that stopped it (then ``ids`` is empty)."""

    def worker_started(self, worker: WorkerView) -> None:
        """A worker of this object began."""

    def worker_stopped(self, worker: WorkerView) -> None:
        """That worker ended."""

    def run_started(self, job: RunningJob) -> object:
        """A worker starts running ``job`` (in the task that runs it)."""
        return None

    def run_ended(self, job: RunningJob, token: object, outcome: Outcome | None) -> None:
        """The run ended with ``outcome`` (None: cut short, by a cancel or a stop)."""

    def failures_written(self, outcomes: Sequence[Outcome], states: dict[int, str]) -> None:
        """Failed or expired runs were recorded: ``states`` has the state each job went
        to (retry, failed or expired), by job id; a stale run's job is missing."""


class Observers(Observer):
    """Several observers told in turn."""

    def __init__(self, observers: Sequence[Observer]) -> None:
        self.observers = list(observers)

    def send_started(self, names: Sequence[str]) -> object:
        return [_guarded(o.send_started, None, names) for o in self.observers]

    def send_ended(
        self,
        token: object,
        names: Sequence[str],
        ids: Sequence[int | None],
        error: BaseException | None,
    ) -> None:
        assert isinstance(token, list)
        for o, t in reversed(list(zip(self.observers, token, strict=True))):
            _guarded(o.send_ended, None, t, names, ids, error)

    def worker_started(self, worker: WorkerView) -> None:
        for o in self.observers:
            _guarded(o.worker_started, None, worker)

    def worker_stopped(self, worker: WorkerView) -> None:
        for o in self.observers:
            _guarded(o.worker_stopped, None, worker)

    # A run's two calls are on the worker's hot path: no helper calls, no lists for one.

    def run_started(self, job: RunningJob) -> object:
        if len(self.observers) == 1:
            try:
                return self.observers[0].run_started(job)
            except Exception:
                log.exception("observer %r failed", self.observers[0])
                return None
        return [_guarded(o.run_started, None, job) for o in self.observers]

    def run_ended(self, job: RunningJob, token: object, outcome: Outcome | None) -> None:
        if len(self.observers) == 1:
            try:
                self.observers[0].run_ended(job, token, outcome)
            except Exception:
                log.exception("observer %r failed", self.observers[0])
            return
        assert isinstance(token, list)
        for o, t in reversed(list(zip(self.observers, token, strict=True))):
            _guarded(o.run_ended, None, job, t, outcome)

    def failures_written(self, outcomes: Sequence[Outcome], states: dict[int, str]) -> None:
        for o in self.observers:
            _guarded(o.failures_written, None, outcomes, states)


def combine(current: Observer | None, added: Observer) -> Observer:
    """``current`` and ``added`` as one observer (each guarded: one that raises is logged)."""
    if current is None:
        return Observers([added])
    if isinstance(current, Observers):
        return Observers([*current.observers, added])
    return Observers([current, added])


def _guarded(call: object, default: object, *args: object) -> object:
    assert callable(call)
    try:
        return call(*args)
    except Exception:
        log.exception("observer %r failed", call)
        return default
