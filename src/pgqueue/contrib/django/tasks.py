"""A ``django.tasks`` backend on pgqueue (Django 6's ``django.tasks``, or the
``django-tasks`` backport's ``django_tasks`` before it)::

    TASKS = {"default": {"BACKEND": "pgqueue.contrib.django.tasks.PgQueueBackend"}}

``task.enqueue()`` sends a pgqueue job (in the caller's ``transaction.atomic()``, like
every send of ``pgqueue.contrib.django``) to the queue ``OPTIONS["QUEUE_PREFIX"]`` +
``queue_name`` (default ``tasks.default``), with the task's priority and ``run_after``;
``manage.py pgqueue_worker`` runs it, and ``get_result()`` reads the job back as a
``TaskResult``. The other ``OPTIONS`` are the jobs' pgqueue options (``retry_limit``,
default 0 as a task that raises has failed; ``expire_in``, ...).
"""

from __future__ import annotations

import builtins
import re
from traceback import format_exception
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone
from django.utils.module_loading import import_string

from pgqueue import Job, JobState, RunningJob
from pgqueue._config import check_name
from pgqueue.errors import InvalidNameError, PgQueueError, QueueNotFoundError
from pgqueue.models import JobOptions, parse_options

from ._queue import DjangoPgQueue, get_queue

if TYPE_CHECKING:
    from django.tasks import Task, TaskContext, TaskResult, TaskResultStatus, task_backends
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import TaskError
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started
    from django.utils.json import normalize_json
else:
    try:  # Django 6.0 and later
        from django.tasks import Task, TaskContext, TaskResult, TaskResultStatus, task_backends
        from django.tasks.backends.base import BaseTaskBackend
        from django.tasks.base import TaskError
        from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
        from django.tasks.signals import task_enqueued, task_finished, task_started
        from django.utils.json import normalize_json
    except ImportError:  # the django-tasks backport
        from django_tasks import TaskContext, TaskResult, TaskResultStatus, task_backends
        from django_tasks.backends.base import BaseTaskBackend
        from django_tasks.base import Task, TaskError
        from django_tasks.exceptions import InvalidTaskError as InvalidTask
        from django_tasks.exceptions import TaskResultDoesNotExist
        from django_tasks.signals import task_enqueued, task_finished, task_started
        from django_tasks.utils import normalize_json

__all__ = ["PgQueueBackend", "run_task"]

DEFAULT_PREFIX = "tasks."
# A job's state as a task's status.
_STATUS = {
    JobState.created: TaskResultStatus.READY,
    JobState.retry: TaskResultStatus.READY,
    JobState.active: TaskResultStatus.RUNNING,
    JobState.completed: TaskResultStatus.SUCCESSFUL,
    JobState.failed: TaskResultStatus.FAILED,
    JobState.expired: TaskResultStatus.FAILED,
    JobState.cancelled: TaskResultStatus.FAILED,
}


class PgQueueBackend(BaseTaskBackend):
    """Runs ``django.tasks`` tasks as pgqueue jobs (see the module's docstring).

    Example:
        ```python
        # settings.py
        TASKS = {"default": {"BACKEND": "pgqueue.contrib.django.tasks.PgQueueBackend"}}

        # anywhere: the task's job goes to the queue "tasks.default"
        result = add_note.enqueue(order.pk, "gift wrap")
        add_note.get_result(result.id).status  # READY until pgqueue_worker runs it
        ```
    """

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.prefix, self.job_options = _split_options(alias, self.options)

    # -- producing ---------------------------------------------------------------------------

    def queue_for(self, queue_name: str) -> str:
        """The pgqueue queue of a task queue."""
        return self.prefix + queue_name

    def validate_task(self, task: Task[Any, Any]) -> None:
        super().validate_task(task)
        try:
            check_name(self.queue_for(task.queue_name))
        except InvalidNameError as exc:
            raise InvalidTask(f"queue_name {task.queue_name!r}: {exc}") from None

    def enqueue(self, task: Task[Any, Any], args: Any, kwargs: Any) -> TaskResult[Any, Any]:
        """Send the task as a job: in the caller's transaction inside ``atomic()``."""
        self.validate_task(task)
        pending = self._result(task, "0", TaskResultStatus.READY, list(args), dict(kwargs))
        queue = get_queue()
        name = self.queue_for(task.queue_name)
        data = {
            "task": task.module_path,
            "args": pending.args,
            "kwargs": pending.kwargs,
            "backend": self.alias,
        }
        options: dict[str, Any] = {**self.job_options, "priority": task.priority}
        if task.run_after is not None:
            run_after = task.run_after
            if timezone.is_naive(run_after):  # USE_TZ = False: the project's time zone
                run_after = timezone.make_aware(run_after, timezone.get_default_timezone())
            options["start_after"] = run_after
        try:
            handle = queue.send(name, data, **options)
        except QueueNotFoundError:  # a queue no handler declared (QUEUES = []): make it
            queue.create_queue(name)
            handle = queue.send(name, data, **options)
        if handle is None:
            raise PgQueueError(
                f"the job of task {task.module_path} was blocked by a singleton key or a "
                f"policy of queue {name!r}"
            )
        result = self._result(
            task, str(int(handle)), TaskResultStatus.READY, data["args"], data["kwargs"]
        )
        object.__setattr__(result, "enqueued_at", timezone.now())
        task_enqueued.send(type(self), task_result=result)
        return result

    # -- results -----------------------------------------------------------------------------

    def get_result(self, result_id: str) -> TaskResult[Any, Any]:
        """The task result of job ``result_id``; TaskResultDoesNotExist if there is no such
        job of this backend (or it was deleted after ``delete_after``)."""
        try:
            job_id = int(result_id)
        except (TypeError, ValueError):
            raise TaskResultDoesNotExist(f"no task result {result_id!r}") from None
        job = get_queue().get_job_by_id(job_id) if 0 < job_id < 2**63 else None
        if job is None or not self._owns(job):
            raise TaskResultDoesNotExist(f"no task result {result_id!r}")
        return self.result_of(job)

    def _owns(self, job: Job) -> bool:
        data = job.data
        return (
            job.name.startswith(self.prefix)
            and isinstance(data, dict)
            and isinstance(data.get("task"), str)
            and data.get("backend") == self.alias
        )

    def result_of(self, job: Job) -> TaskResult[Any, Any]:
        """A job of this backend's as a TaskResult (InvalidTask if its task no longer
        imports)."""
        data = job.data
        task = load_task(data["task"])
        status = _STATUS[job.state]
        result = self._result(
            task, str(job.id), status, data.get("args", []), data.get("kwargs", {})
        )
        finished = job.state.finished
        errors = [_task_error(e.get("error")) for e in job.errors or []]
        if job.state in (JobState.failed, JobState.expired, JobState.cancelled) and not errors:
            errors.append(_task_error(job.output))
        workers = [str(e.get("worker") or "") for e in job.errors or []]
        workers += [""] * max(0, job.attempt - len(workers))
        for attr, value in (
            ("enqueued_at", job.created_at),
            ("started_at", job.started_at),
            ("last_attempted_at", job.started_at),
            ("finished_at", job.completed_at if finished else None),
            ("errors", errors),
            ("worker_ids", workers),
        ):
            object.__setattr__(result, attr, value)
        if status == TaskResultStatus.SUCCESSFUL:
            object.__setattr__(result, "_return_value", job.output)
        return result

    def _result(
        self, task: Task[Any, Any], id: str, status: Any, args: Any, kwargs: Any
    ) -> TaskResult[Any, Any]:
        return TaskResult(
            task=task,
            id=id,
            status=status,
            enqueued_at=None,
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=args,
            kwargs=kwargs,
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )

    # -- the worker's side -------------------------------------------------------------------

    # Read by the app when Django starts (a duck type: the app does not import this module
    # unless a backend of TASKS names it).
    @classmethod
    def register_pgqueue_handlers(
        cls, queue: DjangoPgQueue, alias: str, params: dict[str, Any]
    ) -> None:
        """Register :func:`run_task` as the handler of this backend's queues (a pattern of
        them all when ``QUEUES`` is empty); the jobs carry their options."""
        prefix, _ = _split_options(alias, params.get("OPTIONS", {}))
        names = params.get("QUEUES", ["default"])
        queues = [prefix + "*"] if not names else [prefix + n for n in names]
        for name in queues:
            try:
                queue.job(name, description=f"django.tasks tasks of backend {alias!r}")(run_task)
            except PgQueueError as exc:
                raise ImproperlyConfigured(f"TASKS[{alias!r}]: {exc}") from exc


def run_task(data: dict[str, Any], job: RunningJob) -> Any:
    """The handler of a task's job: import the task by its path, run it, return its
    (JSON-normalised) value; the task's exception fails the job.

    Example:
        ```python
        # What the backend registers for each of its queues (pgqueue_worker then runs them):
        pq.job("tasks.default")(run_task)
        ```
    """
    backend = task_backends[data["backend"]]
    if not isinstance(backend, PgQueueBackend):
        raise ImproperlyConfigured(
            f"TASKS[{data['backend']!r}] is no longer a PgQueueBackend: job {job.id} cannot run"
        )
    task = load_task(data["task"])
    running = backend.result_of(job)
    task_started.send(type(backend), task_result=running)
    try:
        if task.takes_context:
            value = task.call(TaskContext(task_result=running), *running.args, **running.kwargs)
        else:
            value = task.call(*running.args, **running.kwargs)
        value = normalize_json(value)
    except BaseException as exc:
        object.__setattr__(running, "status", TaskResultStatus.FAILED)
        running.errors.append(_task_error(exc))
        task_finished.send(type(backend), task_result=running)
        raise
    object.__setattr__(running, "status", TaskResultStatus.SUCCESSFUL)
    object.__setattr__(running, "_return_value", value)
    task_finished.send(type(backend), task_result=running)
    return value


def load_task(path: str) -> Task[Any, Any]:
    """The task at ``path`` (module.qualname); InvalidTask if it does not import or is not
    a task."""
    try:
        task = import_string(path)
    except ImportError as exc:
        raise InvalidTask(f"task {path!r} does not import: {exc}") from exc
    if not isinstance(task, Task):
        raise InvalidTask(f"{path!r} is a {type(task).__name__}, not a task (@task)")
    return task


_JOB_OPTIONS = {
    "retry_limit",
    "retry_delay",
    "retry_backoff",
    "retry_delay_max",
    "expire_in",
    "heartbeat_seconds",
    "retention",
    "delete_after",
    "dead_letter",
}


def _split_options(alias: str, options: object) -> tuple[str, dict[str, Any]]:
    if not isinstance(options, dict):
        raise ImproperlyConfigured(f"TASKS[{alias!r}]['OPTIONS'] must be a dict")
    options = dict(options)
    prefix = options.pop("QUEUE_PREFIX", DEFAULT_PREFIX)
    if not isinstance(prefix, str):
        raise ImproperlyConfigured(f"TASKS[{alias!r}]: QUEUE_PREFIX must be a string")
    unknown = sorted(set(options) - _JOB_OPTIONS)
    if unknown:
        raise ImproperlyConfigured(
            f"TASKS[{alias!r}]['OPTIONS']: unknown option(s) {', '.join(unknown)} (known: "
            f"QUEUE_PREFIX, {', '.join(sorted(_JOB_OPTIONS))})"
        )
    try:
        parse_options(JobOptions, options)
    except PgQueueError as exc:
        raise ImproperlyConfigured(f"TASKS[{alias!r}]['OPTIONS']: {exc}") from exc
    return prefix, {"retry_limit": 0, **options}


# The last line of a formatted exception names its class: module.QualName[: message].
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?::|$)")


def _task_error(error: object) -> TaskError:
    """A TaskError from an exception or from a stored error (type, message, traceback)."""
    if isinstance(error, BaseException):
        kind = type(error)
        path = f"{kind.__module__}.{kind.__qualname__}"
        return TaskError(exception_class_path=path, traceback="".join(format_exception(error)))
    stored = error if isinstance(error, dict) else {}
    name = str(stored.get("type") or "")
    trace = str(stored.get("traceback") or stored.get("message") or "")
    return TaskError(exception_class_path=_exception_path(name, trace), traceback=trace)


def _exception_path(name: str, trace: str) -> str:
    """The exception class's path: from the traceback's line naming it (Python writes the
    module but for builtins), else a builtin of that name, else ``builtins.Exception``."""
    if name:
        for line in reversed(trace.splitlines()):
            found = _EXCEPTION_LINE.match(line)
            if found and found.group(1).rpartition(".")[2] == name:
                path = found.group(1)
                return path if "." in path else f"builtins.{path}"
    if isinstance(getattr(builtins, name, None), type):
        return f"builtins.{name}"
    return "builtins.Exception"
