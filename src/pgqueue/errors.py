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
    resources, a deadlock); False when the request itself was refused.

    Example:
        ```python
        try:
            pq.send("emails", data)
        except PgQueueError as exc:
            log.error("could not queue the email: %s", exc)
        ```
    """

    transient: bool = False


class InvalidInputError(PgQueueError, ValueError):
    """Input refused before anything was written.

    Example:
        ```python
        try:
            pq.send("emails", {"to": "ada@example.com"}, priority="high")
        except InvalidInputError as exc:  # nothing was written
            print(exc)
        ```
    """


class InvalidNameError(InvalidInputError):
    """A queue, event or schema name breaks the naming rules.

    Example:
        ```python
        try:
            pq.create_queue("")
        except InvalidNameError as exc:
            print(exc)
        ```
    """


class InvalidOptionError(InvalidInputError):
    """A job or queue option is unknown or has an invalid value.

    Example:
        ```python
        try:
            pq.send("emails", data, retry_limit=-1)
        except InvalidOptionError as exc:
            print(exc)
        ```
    """


class InvalidPayloadError(InvalidInputError):
    """Job data is not JSON-serialisable or fails its pydantic model.

    Example:
        ```python
        try:
            pq.send("emails", {"ratio": float("nan")})  # NaN is not JSON
        except InvalidPayloadError as exc:
            print(exc)
        ```
    """


class InvalidScheduleError(InvalidInputError):
    """A cron expression or time zone is invalid.

    Example:
        ```python
        try:
            pq.schedule("report", "61 * * * *")
        except InvalidScheduleError as exc:
            print(exc)
        ```
    """


class DependencyError(InvalidInputError):
    """Jobs' dependencies cannot be met: an unknown parent, a cycle in a flow, or a parent
    of a flow blocked by its singleton key or queue policy. Nothing was sent.

    Example:
        ```python
        flow = Flow()
        flow.add("emails", depends_on=[999_999])  # no such job
        try:
            pq.send_flow(flow)
        except DependencyError as exc:  # a missing parent, a cycle, a blocked parent
            print(exc)
        ```
    """


class InvalidDsnError(InvalidInputError):
    """A connection string cannot be parsed.

    Example:
        ```python
        try:
            PgQueue("postgresql://db:notaport/app")
        except InvalidDsnError as exc:
            print(exc)
        ```
    """


class NotFoundError(PgQueueError, LookupError):
    """A named object does not exist.

    Example:
        ```python
        try:
            pq.result(job_id)
        except NotFoundError:
            print("no such job")
        ```
    """


class QueueNotFoundError(NotFoundError):
    """The queue does not exist; create it with ``create_queue`` or ``@pq.job``.

    Example:
        ```python
        try:
            pq.send("no-such-queue", {})
        except QueueNotFoundError as exc:
            print(exc)
        ```
    """

    def __init__(self, names: list[str] | str) -> None:
        self.names = [names] if isinstance(names, str) else sorted(names)
        joined = ", ".join(repr(n) for n in self.names)
        super().__init__(f"queue {joined} does not exist (create it with create_queue)")


class JobNotFoundError(NotFoundError):
    """No job has that id.

    Example:
        ```python
        try:
            pq.result(999_999)
        except JobNotFoundError as exc:
            print(exc)
        ```
    """


class DatabaseError(PgQueueError):
    """A database operation failed; the psycopg error is the ``__cause__``.

    Example:
        ```python
        try:
            pq.send("emails", data)
        except DatabaseError as exc:
            print(exc, repr(exc.__cause__))  # the psycopg error
        ```
    """


class ConnectError(DatabaseError):
    """The database server cannot be reached.

    Example:
        ```python
        try:
            PgQueue("postgresql://nowhere.invalid/app").start()
        except ConnectError as exc:
            print(exc)
        ```
    """

    transient = True


class MigrationError(DatabaseError):
    """The schema cannot be migrated.

    Example:
        ```python
        try:
            PgQueue(dsn).start()  # migrates the schema first
        except MigrationError as exc:
            print(exc)
        ```
    """


class EmbeddedServerError(PgQueueError):
    """The embedded PostgreSQL server cannot be started.

    Example:
        ```python
        try:
            PgQueue().start()  # no DSN: starts the embedded server
        except EmbeddedServerError as exc:
            print(exc)
        ```
    """


class WorkerError(PgQueueError):
    """A worker cannot run as asked.

    Example:
        ```python
        try:
            pq.work()  # with no handler registered
        except WorkerError as exc:
            print(exc)
        ```
    """


class HandlerConflictError(WorkerError):
    """A worker of a queue object made with ``on_conflict="error"`` found that another
    application registered a different handler for a queue it serves (on the same schema,
    recently): it refuses to start. ``conflicts`` describes each pair of handlers.

    Example:
        ```python
        pq = PgQueue(app_name="billing", on_conflict="error")
        try:
            pq.work()
        except HandlerConflictError as exc:
            for conflict in exc.conflicts:
                print(conflict.describe())
        ```
    """

    def __init__(self, message: str, conflicts: list[Any]) -> None:
        super().__init__(message)
        self.conflicts = conflicts


class JobFailedError(PgQueueError):
    """An awaited job ended without a result: it failed, expired or was cancelled.
    ``state`` is its final state (a JobState), ``error`` its output (for a failure, the
    error its handler raised: type, message and traceback).

    Example:
        ```python
        try:
            pq.result(job_id, timeout=60)
        except JobFailedError as exc:
            print(exc.job_id, exc.state, exc.error)
        ```
    """

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
    """An awaited job did not end within the timeout (it may still end later).

    Example:
        ```python
        try:
            pq.result(job_id, timeout=5)
        except ResultTimeoutError:
            print("still running; it may end later")
        ```
    """

    transient = True
