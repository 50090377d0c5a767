"""pgqueue: a reliable job queue that lives in PostgreSQL."""

from ._async.function import AsyncJobFunction
from ._async.queue import AsyncPgQueue
from ._async.results import AsyncJobHandle
from ._async.shards import AsyncShards
from ._executor import RunningJob, Snooze
from ._handlers import HandlerInfo
from ._maintenance import MaintenanceResult, MaintenanceSettings
from ._migrate import MigrationStatus
from ._sync.function import JobFunction
from ._sync.queue import PgQueue
from ._sync.results import JobHandle
from ._sync.shards import Shards
from ._version import VERSION as __version__
from .errors import (
    ConnectError,
    DatabaseError,
    DependencyError,
    EmbeddedServerError,
    HandlerConflictError,
    InvalidDsnError,
    InvalidInputError,
    InvalidNameError,
    InvalidOptionError,
    InvalidPayloadError,
    InvalidScheduleError,
    JobFailedError,
    JobNotFoundError,
    MigrationError,
    NotFoundError,
    PgQueueError,
    QueueNotFoundError,
    ResultTimeoutError,
    WorkerError,
)
from .flow import Flow, FlowStep
from .models import (
    GroupStats,
    Job,
    JobOptions,
    JobState,
    QueueInfo,
    QueueOptions,
    QueueStats,
    ScheduleInfo,
)

__all__ = [
    "AsyncJobFunction",
    "AsyncJobHandle",
    "AsyncPgQueue",
    "AsyncShards",
    "ConnectError",
    "DatabaseError",
    "DependencyError",
    "EmbeddedServerError",
    "Flow",
    "FlowStep",
    "GroupStats",
    "HandlerConflictError",
    "HandlerInfo",
    "InvalidDsnError",
    "InvalidInputError",
    "InvalidNameError",
    "InvalidOptionError",
    "InvalidPayloadError",
    "InvalidScheduleError",
    "Job",
    "JobFailedError",
    "JobFunction",
    "JobHandle",
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
    "ResultTimeoutError",
    "RunningJob",
    "ScheduleInfo",
    "Shards",
    "Snooze",
    "WorkerError",
    "__version__",
]
