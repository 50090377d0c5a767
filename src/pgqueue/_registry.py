"""Handlers registered with ``@pq.job``: what they are called, what they accept, their options."""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from pydantic import BaseModel, ValidationError

from ._config import check_count, check_name
from .errors import InvalidInputError, InvalidOptionError, InvalidPayloadError
from .models import Job, JobOptions, QueueOptions, parse_options

__all__ = ["JobDefinition", "Registry", "is_pattern", "pattern_regex"]

# What makes a handler's name a glob pattern (queue names hold none of these).
_GLOB = re.compile(r"[*?\[\]!]")


def is_pattern(name: str) -> bool:
    """Whether ``name`` is a glob pattern of queue names (``*``, ``?``, ``[...]``)."""
    return _GLOB.search(name) is not None


def pattern_regex(pattern: str) -> str:
    """A POSIX regular expression matching every queue name ``pattern`` matches (and, for
    a ``[...]`` class, others of the same length): the database's first cut, which
    :func:`fnmatch.fnmatchcase` then makes exact."""
    parts = []
    for piece in re.split(r"(\*|\?|\[[^\]]*\])", pattern):
        if piece == "*":
            parts.append(".*")
        elif piece == "?" or (piece.startswith("[") and piece.endswith("]") and len(piece) > 2):
            parts.append(".")
        else:
            parts.append(re.sub(r"([^A-Za-z0-9_/:-])", r"\\\1", piece))
    return "^" + "".join(parts) + "$"


_QUEUE_KEYS = frozenset(QueueOptions.model_fields)
_JOB_ONLY_KEYS = frozenset(JobOptions.model_fields) - _QUEUE_KEYS


@dataclass(frozen=True)
class JobDefinition:
    """A registered handler and everything known about it."""

    name: str
    func: Callable[..., Any]
    description: str | None
    concurrency: int | None
    queue_options: Mapping[str, Any]
    send_options: Mapping[str, Any]
    is_async: bool
    data_model: type[BaseModel] | None
    data_param: bool
    job_param: str | None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_pattern(self) -> bool:
        """Whether it serves every queue its name matches as a glob pattern (that has no
        handler of its own)."""
        return is_pattern(self.name)

    @property
    def options(self) -> dict[str, Any]:
        """Every default declared for this job (queue and send options)."""
        return {**self.queue_options, **self.send_options}

    def parse_data(self, data: Any) -> Any:
        """The data the handler receives: validated into its pydantic model when it has one."""
        if self.data_model is None:
            return data
        try:
            return self.data_model.model_validate(data)
        except ValidationError as exc:
            raise InvalidPayloadError(
                f"data for job {self.name!r} does not match {self.data_model.__name__}: {exc}"
            ) from None

    def call_args(self, job: Job) -> tuple[list[Any], dict[str, Any]]:
        """Positional and keyword arguments for one run of the handler."""
        args = [self.parse_data(job.data)] if self.data_param else []
        kwargs = {self.job_param: job} if self.job_param else {}
        return args, kwargs


class Registry:
    """The handlers of one queue object."""

    def __init__(self) -> None:
        self._definitions: dict[str, JobDefinition] = {}
        self._patterns: list[JobDefinition] = []
        self._undeclared: list[JobDefinition] = []

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.find(name) is not None

    def __getitem__(self, name: str) -> JobDefinition:
        found = self.find(name)
        if found is None:
            raise KeyError(name)
        return found

    @property
    def names(self) -> frozenset[str]:
        """The names (and patterns) handlers are registered for."""
        return frozenset(self._definitions)

    def find(self, name: str) -> JobDefinition | None:
        """The handler of queue ``name``: its own, else the pattern handler that matches it
        (the longest pattern, then the first in alphabetical order), else None."""
        own = self._definitions.get(name)
        if own is not None or not self._patterns:
            return own
        matching = [d for d in self._patterns if fnmatchcase(name, d.name)]
        return min(matching, key=lambda d: (-len(d.name), d.name), default=None)

    def __len__(self) -> int:
        return len(self._definitions)

    def definitions(self) -> list[JobDefinition]:
        """Every registered job, by name: the catalogue an admin screen shows."""
        return [self._definitions[n] for n in sorted(self._definitions)]

    def register(
        self,
        name: str,
        func: Callable[..., Any],
        *,
        description: str | None = None,
        concurrency: int | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> JobDefinition:
        """Register ``func`` as the handler of queue ``name``, or, if ``name`` is a glob
        pattern, of every existing queue it matches that has no handler of its own."""
        pattern = is_pattern(name)
        if pattern:
            check_name(_GLOB.sub("x", name), "pattern")
        else:
            check_name(name)
        if name in self._definitions and self._definitions[name].func is not func:
            raise InvalidInputError(f"a handler is already registered for job {name!r}")
        if concurrency is not None:
            check_count("option 'concurrency':", concurrency)
        options = dict(options or {})
        queue_options = {k: v for k, v in options.items() if k in _QUEUE_KEYS}
        send_options = {k: v for k, v in options.items() if k not in _QUEUE_KEYS}
        parse_options(QueueOptions, queue_options)
        if pattern and queue_options:
            raise InvalidOptionError(
                f"pattern handler {name!r} serves queues that exist: give queue options ("
                + ", ".join(sorted(queue_options))
                + ") to each queue with create_queue or update_queue"
            )
        unknown = set(send_options) - _JOB_ONLY_KEYS
        if unknown:
            raise InvalidOptionError(
                "unknown option " + ", ".join(repr(u) for u in sorted(unknown))
            )
        parse_options(JobOptions, send_options)
        if "start_after" in send_options:
            raise InvalidOptionError("option 'start_after' cannot be a handler default")
        data_model, data_param, job_param = _inspect_handler(func)
        definition = JobDefinition(
            name=name,
            func=func,
            description=description if description is not None else _first_line(func),
            concurrency=concurrency,
            queue_options=queue_options,
            send_options=send_options,
            is_async=inspect.iscoroutinefunction(func),
            data_model=data_model,
            data_param=data_param,
            job_param=job_param,
        )
        self._definitions[name] = definition
        if pattern:  # no queue of that name: it serves those that exist
            self._patterns = [d for d in self._patterns if d.name != name] + [definition]
        else:
            self._undeclared.append(definition)
        return definition

    @property
    def has_undeclared(self) -> bool:
        """True while some definition's queue has not been declared."""
        return bool(self._undeclared)

    def undeclared(self) -> list[JobDefinition]:
        """The definitions whose queues have not been declared in the database yet."""
        return list(self._undeclared)

    def redeclare(self) -> None:
        """Mark every definition undeclared: its queue is to be declared again (the queue
        object now points at another schema)."""
        self._undeclared = [d for d in self._definitions.values() if not d.is_pattern]

    def declared(self, definitions: list[JobDefinition]) -> None:
        """Mark definitions declared (their declaration committed)."""
        done = {id(d) for d in definitions}
        self._undeclared = [d for d in self._undeclared if id(d) not in done]


def _first_line(func: Callable[..., Any]) -> str | None:
    doc = inspect.getdoc(func)
    return doc.strip().splitlines()[0] if doc else None


def _inspect_handler(func: Callable[..., Any]) -> tuple[type[BaseModel] | None, bool, str | None]:
    """Which parameter takes the data (and its pydantic model) and which takes the Job."""
    if not callable(func):
        raise InvalidInputError(f"a job handler must be callable, got {func!r}")
    try:
        hints = typing.get_type_hints(func)
    except Exception:
        hints = {}
    data_model: type[BaseModel] | None = None
    data_param = False
    job_param: str | None = None
    for param in inspect.signature(func).parameters.values():
        hint = hints.get(param.name)
        is_job = (isinstance(hint, type) and issubclass(hint, Job)) or (
            hint is None and param.name == "job"
        )
        if is_job and job_param is None:
            job_param = param.name
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if not data_param and param.kind is not param.KEYWORD_ONLY:
            if job_param is not None:  # it would be passed the data as well
                raise InvalidInputError(
                    f"handler {getattr(func, '__qualname__', func)!r}: the data parameter "
                    f"{param.name!r} must come before the job parameter {job_param!r}"
                )
            data_param = True
            if isinstance(hint, type) and issubclass(hint, BaseModel):
                data_model = hint
            continue
        if param.default is param.empty:
            raise InvalidInputError(
                f"handler {getattr(func, '__qualname__', func)!r}: parameter {param.name!r} "
                "has no default; a handler takes the data and optionally the Job"
            )
    return data_model, data_param, job_param
