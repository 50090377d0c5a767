"""What the workloads need from a library: install, produce, seed, and a worker command."""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

Payload = dict[str, Any]


@dataclass(frozen=True)
class WorkerSettings:
    """One configuration of a library's worker: a label for tables, the options it sets."""

    label: str
    options: Mapping[str, int] = field(default_factory=dict)


class Producer(Protocol):
    """Sends jobs to the benchmark queue with a library's own API."""

    async def send(self, data: Payload) -> None:
        """One job, one call, one transaction."""

    async def send_batch(self, items: list[Payload]) -> None:
        """Many jobs with the library's batch API (one call)."""


@dataclass(frozen=True)
class SendLoop:
    """The producer loop W1, W2 and W4 run: ``jobs`` jobs ``{"n": i}``, one per ``send``
    (``batch`` None) or ``batch`` per ``send_batch``; each call starts ``gap`` seconds after
    the previous one's slot (0: back to back) and, when ``stamp``, puts ``"t"`` (epoch seconds
    just before the call) in its payloads. The payloads are built before the clock starts."""

    jobs: int
    batch: int | None = None
    gap: float = 0.0
    stamp: bool = False


@runtime_checkable
class NativeLoop(Protocol):
    """A producer that runs a :class:`SendLoop` in its library's own runtime.

    For a library not written in Python: driving its producer one call at a time from here
    would add an inter-process round trip to every call, which its users do not pay."""

    async def run_loop(self, loop: SendLoop) -> float:
        """Run ``loop`` there; the seconds from the first call's start to the last one's end,
        timed there."""


class Adapter(ABC):
    """One library under test."""

    name: ClassVar[str]
    distribution: ClassVar[str]
    default: ClassVar[WorkerSettings]
    sweep: ClassVar[tuple[WorkerSettings, ...]]  # the default is measured separately

    def version(self) -> str:
        """The installed version of the library."""
        return metadata.version(self.distribution)

    def extra_versions(self) -> dict[str, str]:
        """Versions the report shows beside the Python packages' (a library that runs in
        another runtime names itself and that runtime)."""
        return {}

    async def prepare(self) -> str | None:
        """Make the library ready to run here, once per run (a one-time setup when it needs
        one). None, or why it cannot run (the run then leaves it out and says why)."""
        return None

    async def latency_settings(self, dsn: str) -> WorkerSettings:
        """W4's worker settings, asked after :meth:`install`: the default ones, unless the
        library's documentation asks for others to start a job without waiting out a poll
        interval; the adapter then also applies to the database what those need."""
        return self.default

    @abstractmethod
    async def install(self, dsn: str) -> None:
        """Create the library's schema (and the queues if it has any) in a fresh database."""

    @abstractmethod
    def producer(self, dsn: str) -> AbstractAsyncContextManager[Producer]:
        """A connected producer, as an application would hold one."""

    @abstractmethod
    async def preload(self, dsn: str, count: int) -> None:
        """Make ``count`` jobs of the benchmark queue runnable at one instant (one commit)."""

    @abstractmethod
    async def seed_backlog(self, dsn: str, count: int, finished: bool) -> None:
        """Put ``count`` other jobs in the library's tables: waiting in another queue, or
        finished and not yet cleaned up, in the shape the library leaves them."""

    @abstractmethod
    def remaining_query(self) -> str:
        """SQL counting the benchmark queue's jobs that are not finished yet.

        It runs every few milliseconds during a drain, so it must use the library's
        indexes: a scan of W5's million-row backlog would compete with the drain itself."""

    @abstractmethod
    def worker_command(self, settings: WorkerSettings) -> list[str]:
        """The command line of one worker process, as the library deploys one."""

    def settings_named(self, label: str) -> WorkerSettings:
        """The default or sweep setting with this label."""
        for candidate in (self.default, *self.sweep):
            if candidate.label == label:
                return candidate
        raise KeyError(label)


def script(name: str) -> str:
    """A console script installed next to the running interpreter."""
    return str(Path(sys.executable).parent / name)
