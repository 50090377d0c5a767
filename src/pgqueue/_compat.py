"""The few primitives whose async and blocking forms differ in more than ``await``: the
async source (``_async/``) uses the ``a``-names, and ``scripts/unasync.py`` turns them into
the blocking ones when it writes ``_sync/``."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

__all__ = [
    "ABackground",
    "AEvent",
    "ALock",
    "Background",
    "Event",
    "Lock",
    "aend",
    "aspawn",
    "ato_thread",
    "await_event",
    "end",
    "in_other_thread",
    "run_loop",
    "run_on",
    "spawn",
    "to_thread",
    "wait_event",
]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

ABackground = asyncio.Task[None]
Background = threading.Thread
AEvent = asyncio.Event
Event = threading.Event
ALock = asyncio.Lock
Lock = threading.Lock


async def ato_thread(func: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Call blocking ``func`` without blocking the event loop."""
    return await asyncio.to_thread(func, *args, **kwargs)


def to_thread(func: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Call ``func`` (blocking code may simply block)."""
    return func(*args, **kwargs)


def aspawn(func: Callable[[], Coroutine[Any, Any, None]], name: str) -> ABackground:
    """Run ``func`` in the background, on a task."""
    return asyncio.create_task(func(), name=name)


def spawn(func: Callable[[], None], name: str) -> Background:
    """Run ``func`` in the background, on a daemon thread."""
    thread = threading.Thread(target=func, name=name, daemon=True)
    thread.start()
    return thread


async def aend(task: ABackground) -> None:
    """Cancel a background task and wait for it."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def end(thread: Background) -> None:
    """Wait for a background thread (it cannot be cancelled: it ends at its next check of
    the event that stops it)."""
    if thread is not threading.current_thread():
        thread.join()


async def await_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``event``; True if it is set."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)
    return event.is_set()


def wait_event(event: threading.Event, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``event``; True if it is set."""
    return event.wait(timeout)


def in_other_thread(loop: asyncio.AbstractEventLoop) -> bool:
    """True unless the caller runs on ``loop``'s thread, inside it."""
    try:
        return asyncio.get_running_loop() is not loop
    except RuntimeError:
        return True


def run_on(loop: asyncio.AbstractEventLoop, main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on ``loop`` (running in another thread) and wait for its result."""
    return asyncio.run_coroutine_threadsafe(main, loop).result()


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on a new event loop, as :func:`asyncio.run` does, but never wait for a
    task that ignores cancellation (a handler a worker let go of): what is left when
    ``main`` returns is cancelled, given a second, and then left behind."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=1.0))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
