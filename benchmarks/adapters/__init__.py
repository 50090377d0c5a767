"""One adapter per library under test, pgqueue first."""

from __future__ import annotations

from .base import Adapter, NativeLoop, Producer, SendLoop, WorkerSettings
from .pgboss_adapter import PgbossAdapter
from .pgqueue_adapter import PgqueueAdapter
from .pgqueuer_adapter import PgqueuerAdapter
from .procrastinate_adapter import ProcrastinateAdapter

__all__ = ["ADAPTERS", "Adapter", "NativeLoop", "Producer", "SendLoop", "WorkerSettings"]

ADAPTERS: tuple[Adapter, ...] = (
    PgqueueAdapter(),
    PgqueuerAdapter(),
    ProcrastinateAdapter(),
    PgbossAdapter(),
)
