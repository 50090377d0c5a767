"""What ``@pq.job`` returns: the handler, typed, with the means to send it jobs."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from fnmatch import fnmatchcase
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, overload

from .._base import StartAfter
from .._executor import RunningJob
from .._registry import JobDefinition
from ..errors import InvalidInputError
from .results import AsyncJobHandle
from .runner import AsyncConn

__all__ = ["AsyncJobDecorator", "AsyncJobFunction", "AsyncSender"]

D = TypeVar("D")
P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class AsyncSender(Protocol):
    """The part of the queue object a job function sends with."""

    async def send(
        self,
        name: str,
        data: Any = None,
        *,
        conn: AsyncConn | None = None,
        **options: Any,
    ) -> AsyncJobHandle | None: ...

    async def send_after(
        self,
        name: str,
        data: Any,
        start_after: StartAfter,
        *,
        conn: AsyncConn | None = None,
        **options: Any,
    ) -> AsyncJobHandle | None: ...

    async def insert(
        self,
        jobs: Iterable[Mapping[str, Any]],
        *,
        conn: AsyncConn | None = None,
    ) -> list[int | None]: ...


class AsyncJobFunction(Generic[D, P, R]):
    """What ``@pq.job`` returns: the function itself, plus ``send``, ``send_after`` and
    ``insert``, which send by the handler's name (its defaults apply, its model validates).
    A pattern handler's (``@pq.job("emails.*")``) send to the queue given as ``queue``,
    which the pattern must match.

    Typed by the handler: ``D`` is its data parameter's type (what ``send`` takes; None
    for a handler without one), ``P`` its parameters and ``R`` what it returns.

    Example:
        ```python
        @pq.job("resize", retry_limit=2)
        async def resize(data: dict) -> dict:
            return {"width": data["width"] // 2}

        handle = await resize.send({"width": 640})
        await resize.send_after({"width": 320}, 60)  # in a minute
        await resize.insert([{"width": w} for w in (100, 200, 300)])
        ```
    """

    def __init__(self, queue: AsyncSender, definition: JobDefinition) -> None:
        self._queue = queue
        self.definition = definition
        self.name = definition.name
        functools.update_wrapper(self, definition.func)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        result: R = self.definition.func(*args, **kwargs)
        return result

    def queue_for(self, queue: str | None) -> str:
        """The queue a job of this handler goes to: its own, or for a pattern handler
        ``queue``, which the pattern must match."""
        if self.definition.is_pattern:
            if queue is None:
                raise InvalidInputError(
                    f"job {self.name!r} is a pattern handler: name the queue to send to, "
                    "e.g. .send(data, queue=...)"
                )
            if not isinstance(queue, str) or not fnmatchcase(queue, self.name):
                raise InvalidInputError(
                    f"queue {queue!r} is not one that pattern handler {self.name!r} serves"
                )
            return queue
        if queue is not None and queue != self.name:
            raise InvalidInputError(
                f"job {self.name!r} is the handler of queue {self.name!r}, not of {queue!r}"
            )
        return self.name

    @overload
    async def send(
        self: AsyncJobFunction[None, P, R],
        data: None = None,
        *,
        queue: str | None = None,
        conn: AsyncConn | None = None,
        **options: Any,
    ) -> AsyncJobHandle | None: ...
    @overload
    async def send(
        self,
        data: D,
        *,
        queue: str | None = None,
        conn: AsyncConn | None = None,
        **options: Any,
    ) -> AsyncJobHandle | None: ...
    async def send(
        self,
        data: Any = None,
        *,
        queue: str | None = None,
        conn: AsyncConn | None = None,
        **options: Any,
    ) -> AsyncJobHandle | None:
        """Send a job to this handler's queue (``data`` may be left out only when the
        handler takes none); its id, or None when a singleton or policy blocked it."""
        return await self._queue.send(self.queue_for(queue), data, conn=conn, **options)

    async def send_after(
        self,
        data: D,
        start_after: StartAfter,
        *,
        queue: str | None = None,
        conn: AsyncConn | None = None,
        **options: Any,
    ) -> AsyncJobHandle | None:
        """Send a job that starts after a datetime, a timedelta or a number of seconds."""
        return await self._queue.send_after(
            self.queue_for(queue), data, start_after, conn=conn, **options
        )

    async def insert(
        self,
        items: Iterable[D],
        *,
        queue: str | None = None,
        conn: AsyncConn | None = None,
        **options: Any,
    ) -> list[int | None]:
        """Send many jobs in one statement, one per item of data."""
        name = self.queue_for(queue)
        return await self._queue.insert(
            [{"name": name, "data": d, **options} for d in items], conn=conn
        )


class _JobOnly(Protocol[R_co]):
    """A handler that takes the running job and no data."""

    def __call__(self, job: RunningJob) -> R_co: ...


class AsyncJobDecorator(Protocol):
    """What ``@pq.job(...)`` and ``@pq.cron(...)`` are: they type the job function by the
    handler's first parameter (its data), or as taking no data when it has none (or only
    a parameter ``job``)."""

    @overload
    def __call__(self, func: _JobOnly[R], /) -> AsyncJobFunction[None, [RunningJob], R]: ...
    @overload
    def __call__(
        self, func: Callable[Concatenate[D, P], R], /
    ) -> AsyncJobFunction[D, Concatenate[D, P], R]: ...
    @overload
    def __call__(self, func: Callable[[], R], /) -> AsyncJobFunction[None, [], R]: ...
