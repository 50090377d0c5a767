"""pgqueue: a reliable job queue that lives in PostgreSQL."""

from ._async.queue import AsyncPgQueue
from ._sync.queue import PgQueue
from .errors import (
    ConnectError,
    DatabaseError,
    EmbeddedServerError,
    InvalidDsnError,
    InvalidInputError,
    InvalidNameError,
    InvalidOptionError,
    InvalidPayloadError,
    InvalidScheduleError,
    JobNotFoundError,
    MigrationError,
    NotFoundError,
    PgQueueError,
    QueueNotFoundError,
    WorkerError,
)
from .maintenance import MaintenanceResult, MaintenanceSettings
from .migrate import MigrationStatus
from .models import Job, JobOptions, JobState, QueueInfo, QueueOptions, QueueStats, ScheduleInfo

__version__ = "0.1.0"

__all__ = [
    "AsyncPgQueue",
    "ConnectError",
    "DatabaseError",
    "EmbeddedServerError",
    "InvalidDsnError",
    "InvalidInputError",
    "InvalidNameError",
    "InvalidOptionError",
    "InvalidPayloadError",
    "InvalidScheduleError",
    "Job",
    "JobNotFoundError",
    "JobOptions",
    "JobState",
    "MaintenanceResult",
    "MaintenanceSettings",
    "MigrationError",
    "MigrationStatus",
    "NotFoundError",
    "PgQueue",
    "PgQueueError",
    "QueueInfo",
    "QueueNotFoundError",
    "QueueOptions",
    "QueueStats",
    "ScheduleInfo",
    "WorkerError",
    "__version__",
]
