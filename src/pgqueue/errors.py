"""Every error pgqueue raises, in one tree.

::

    PgQueueError
    ├── InvalidInputError (also ValueError)    bad input, refused before anything is written
    │   ├── InvalidNameError                    queue, event or schema name
    │   ├── InvalidOptionError                  unknown or invalid job/queue option
    │   ├── InvalidPayloadError                 data that is not JSON or fails its model
    │   ├── InvalidScheduleError                cron expression or time zone
    │   └── InvalidDsnError                     a DSN that cannot be parsed
    ├── NotFoundError (also LookupError)
    │   ├── QueueNotFoundError
    │   └── JobNotFoundError
    ├── DatabaseError                           a database failure, the psycopg error as __cause__
    │   ├── ConnectError                        the server cannot be reached (names the host)
    │   └── MigrationError                      the schema cannot be brought up to date
    ├── EmbeddedServerError                     the embedded PostgreSQL cannot start
    ├── WorkerError                             a worker cannot run (no handlers, already running)
    ├── JobFailedError                          an awaited job failed, expired or was cancelled
    └── ResultTimeoutError (also TimeoutError)  an awaited job did not end in time
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConnectError",
    "DatabaseError",
    "DependencyError",
    "EmbeddedServerError",
    "HandlerConflictError",
    "InvalidDsnError",
    "InvalidInputError",
    "InvalidNameError",
    "InvalidOptionError",
    "InvalidPayloadError",
    "InvalidScheduleError",
    "JobFailedError",
    "JobNotFoundError",
    "MigrationError",
    "NotFoundError",
    "PgQueueError",
    "QueueNotFoundError",
    "ResultTimeoutError",
    "WorkerError",
]


class PgQueueError(Exception):
    """Base class of every pgqueue error. ``transient`` is True when the same call may
    succeed later unchanged (the connection dropped, the server restarts or is short of
    resources, a deadlock); False when the request itself was refused."""

    transient: bool = False


class InvalidInputError(PgQueueError, ValueError):
    """Input refused before anything was written."""


class InvalidNameError(InvalidInputError):
    """A queue, event or schema name breaks the naming rules."""


class InvalidOptionError(InvalidInputError):
    """A job or queue option is unknown or has an invalid value."""


class InvalidPayloadError(InvalidInputError):
    """Job data is not JSON-serialisable or fails its pydantic model."""


class InvalidScheduleError(InvalidInputError):
    """A cron expression or time zone is invalid."""


class DependencyError(InvalidInputError):
    """Jobs' dependencies cannot be met: an unknown parent, a cycle in a flow, or a parent
    of a flow blocked by its singleton key or queue policy. Nothing was sent."""


class InvalidDsnError(InvalidInputError):
    """A connection string cannot be parsed."""


class NotFoundError(PgQueueError, LookupError):
    """A named object does not exist."""


class QueueNotFoundError(NotFoundError):
    """The queue does not exist; create it with ``create_queue`` or ``@pq.job``."""

    def __init__(self, names: list[str] | str) -> None:
        self.names = [names] if isinstance(names, str) else sorted(names)
        joined = ", ".join(repr(n) for n in self.names)
        super().__init__(f"queue {joined} does not exist (create it with create_queue)")


class JobNotFoundError(NotFoundError):
    """No job has that id."""


class DatabaseError(PgQueueError):
    """A database operation failed; the psycopg error is the ``__cause__``."""


class ConnectError(DatabaseError):
    """The database server cannot be reached."""

    transient = True


class MigrationError(DatabaseError):
    """The schema cannot be migrated."""


class EmbeddedServerError(PgQueueError):
    """The embedded PostgreSQL server cannot be started."""


class WorkerError(PgQueueError):
    """A worker cannot run as asked."""


class HandlerConflictError(WorkerError):
    """A worker of a queue object made with ``on_conflict="error"`` found that another
    application registered a different handler for a queue it serves (on the same schema,
    recently): it refuses to start. ``conflicts`` describes each pair of handlers."""

    def __init__(self, message: str, conflicts: list[Any]) -> None:
        super().__init__(message)
        self.conflicts = conflicts


class JobFailedError(PgQueueError):
    """An awaited job ended without a result: it failed, expired or was cancelled.
    ``state`` is its final state (a JobState), ``error`` its output (for a failure, the
    error its handler raised: type, message and traceback)."""

    def __init__(self, job_id: int, name: str, state: str, error: Any) -> None:
        self.job_id = job_id
        self.name = name
        self.state = state
        self.error = error
        message = error.get("message") if isinstance(error, dict) else None
        detail = f": {message}" if message else ""
        state_name = getattr(state, "value", state)  # a JobState, or its name
        super().__init__(f"job {job_id} ({name}) {state_name}{detail}")


class ResultTimeoutError(PgQueueError, TimeoutError):
    """An awaited job did not end within the timeout (it may still end later)."""

    transient = True
