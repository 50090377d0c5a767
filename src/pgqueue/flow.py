"""Flows: jobs sent together, some waiting for others to complete."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from .errors import InvalidInputError, InvalidOptionError

__all__ = ["Flow", "FlowStep", "OnParentFailure", "check_on_parent_failure"]

# What a job does when a job it depends on fails, expires, is cancelled or deleted:
# it is cancelled with the reason (and so are the jobs that depend on it), or it runs
# once all its parents have ended, however they ended.
OnParentFailure = Literal["cancel", "run"]


def check_on_parent_failure(value: object) -> OnParentFailure:
    """``value`` if it is an OnParentFailure, else InvalidOptionError."""
    if value == "cancel" or value == "run":
        return value
    raise InvalidOptionError(f"on_parent_failure must be 'cancel' or 'run', got {value!r}")


class FlowStep:
    """One job of a :class:`Flow`: what :meth:`Flow.add` returns, to name as a parent.

    Example:
        ```python
        flow = Flow()
        extract = flow.add("extract", {"file": "a.csv"})
        load = flow.add("load").after(extract)
        ```
    """

    __slots__ = ("data", "flow", "index", "name", "on_parent_failure", "options", "parents")

    def __init__(
        self,
        flow: Flow,
        index: int,
        name: str,
        data: Any,
        on_parent_failure: OnParentFailure,
        options: dict[str, Any],
    ) -> None:
        self.flow = flow
        self.index = index
        self.name = name
        self.data = data
        self.on_parent_failure = on_parent_failure
        self.options = options
        self.parents: list[FlowStep | int] = []

    def after(self, *parents: FlowStep | int) -> FlowStep:
        """Make this job wait for ``parents`` too (steps of the same flow, or ids of jobs
        sent before); returns the step."""
        for parent in parents:
            if isinstance(parent, FlowStep):
                if parent.flow is not self.flow:
                    raise InvalidInputError(f"{parent!r} belongs to another flow")
            elif isinstance(parent, bool) or not isinstance(parent, int):
                raise InvalidInputError(
                    f"a parent is a step of the flow or a job id, got {parent!r}"
                )
            self.parents.append(parent)
        return self

    def __repr__(self) -> str:
        return f"<FlowStep #{self.index} {self.name!r}>"


class Flow:
    """Jobs to send at once, in one statement and all or none (in the caller's transaction
    when given one), each waiting for the jobs it depends on to complete.

    A job waits until all its parents completed; its handler reads their outputs with
    ``parents()``. If a parent fails for good (or expires, or is cancelled or deleted),
    the job and those that depend on it are cancelled, their output saying why, unless it
    was added with ``on_parent_failure="run"``: then it runs once all its parents ended.

    Example:
        ```python
        flow = Flow()
        split = flow.add("split", {"file": path})
        pages = [flow.add("ocr", {"page": n}, depends_on=[split]) for n in range(3)]
        flow.add("assemble", depends_on=pages, on_parent_failure="run")
        handles = await pq.send_flow(flow)
        ```
    """

    def __init__(self) -> None:
        self.steps: list[FlowStep] = []

    def add(
        self,
        name: str,
        data: Any = None,
        *,
        depends_on: Iterable[FlowStep | int] = (),
        on_parent_failure: OnParentFailure = "cancel",
        **options: Any,
    ) -> FlowStep:
        """Add a job of queue ``name`` (options as for ``send``), waiting for the steps
        or the ids of jobs sent before in ``depends_on``."""
        check_on_parent_failure(on_parent_failure)
        if isinstance(depends_on, FlowStep | int | str):
            raise InvalidInputError(f"depends_on must be a list, got {depends_on!r}")
        step = FlowStep(self, len(self.steps), name, data, on_parent_failure, options)
        step.after(*depends_on)
        self.steps.append(step)
        return step

    def __len__(self) -> int:
        return len(self.steps)
