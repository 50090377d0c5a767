"""The public surface: the curated ``pgqueue`` namespace and sync/async parity."""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from typing import Any

import pytest

import pgqueue
from pgqueue import AsyncPgQueue, PgQueue


def test_all_is_the_package_public_names() -> None:
    """What ``pgqueue`` offers at its top level (modules aside) is exactly ``__all__``."""
    assert sorted(pgqueue.__all__) == sorted(set(pgqueue.__all__))  # no duplicates
    offered = {
        name
        for name, value in vars(pgqueue).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert set(pgqueue.__all__) == offered | {"__version__"}


def test_everything_in_all_imports() -> None:
    namespace: dict[str, Any] = {}
    exec("from pgqueue import *", namespace)
    assert set(pgqueue.__all__) <= namespace.keys()
    for name in pgqueue.__all__:
        value = namespace[name]
        module = getattr(value, "__module__", "pgqueue")
        assert module.startswith("pgqueue"), (name, module)
        # Defined where it says it is (a re-export of a third-party name would not be).
        assert getattr(importlib.import_module(module), name, None) is value, (name, module)


def test_errors_form_one_tree() -> None:
    for name in pgqueue.__all__:
        value = getattr(pgqueue, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, pgqueue.PgQueueError), name
    assert issubclass(pgqueue.InvalidInputError, ValueError)
    assert issubclass(pgqueue.NotFoundError, LookupError)


def _public(cls: type) -> dict[str, Callable[..., Any]]:
    return {
        name: member
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


def _same_flavour(annotation: Any) -> str:
    """An annotation with the sync/async connection and queue types made equal."""
    text = str(annotation)
    for async_name, sync_name in (
        ("AsyncConnection", "Connection"),
        ("AsyncConn", "Conn"),
        ("AsyncPgQueue", "PgQueue"),
        ("AsyncJobFunction", "JobFunction"),
        ("AsyncJobDecorator", "JobDecorator"),
        ("AsyncJobHandle", "JobHandle"),
        ("AsyncIterator", "Iterator"),
    ):
        text = text.replace(async_name, sync_name)
    return text


def _parameters(func: Callable[..., Any]) -> list[tuple[str, Any, Any, str]]:
    return [
        (p.name, p.kind, p.default, _same_flavour(p.annotation))
        for p in inspect.signature(func).parameters.values()
    ]


def test_sync_and_async_have_the_same_public_methods() -> None:
    assert _public(PgQueue).keys() == _public(AsyncPgQueue).keys()


@pytest.mark.parametrize("name", [*sorted(_public(PgQueue)), "__init__"])
def test_sync_and_async_signatures_match(name: str) -> None:
    sync, asynchronous = getattr(PgQueue, name), getattr(AsyncPgQueue, name)
    assert _parameters(sync) == _parameters(asynchronous)
    assert _same_flavour(inspect.signature(sync).return_annotation) == _same_flavour(
        inspect.signature(asynchronous).return_annotation
    )
    assert not inspect.iscoroutinefunction(sync)
    if name != "__init__":
        # Methods that do I/O are coroutines on AsyncPgQueue; the I/O-free ones are
        # shared (monitor registration) or return each flavour's type (the decorators).
        io_free = asynchronous is sync or name in ("job", "cron")
        assert inspect.iscoroutinefunction(asynchronous) != io_free


def test_context_managers() -> None:
    # Each flavour has its own protocol, and each enters into a started queue object.
    assert inspect.signature(PgQueue.__enter__).return_annotation == "PgQueue"
    assert inspect.iscoroutinefunction(AsyncPgQueue.__aenter__)
    assert inspect.signature(AsyncPgQueue.__aenter__).return_annotation == "AsyncPgQueue"
    assert not hasattr(PgQueue, "__aenter__") and not hasattr(AsyncPgQueue, "__enter__")


def test_contract_names_exist() -> None:
    """The names DESIGN.md promises to users."""
    contract = {
        "start",
        "stop",
        "send",
        "send_after",
        "send_throttled",
        "send_debounced",
        "insert",
        "publish",
        "work",
        "fetch",
        "complete",
        "fail",
        "cancel",
        "resume",
        "retry",
        "delete_job",
        "get_job_by_id",
        "create_queue",
        "update_queue",
        "delete_queue",
        "get_queue",
        "get_queues",
        "get_queue_stats",
        "schedule",
        "unschedule",
        "get_schedules",
        "subscribe",
        "unsubscribe",
        "job",
        "cron",
    }
    assert contract <= _public(PgQueue).keys()
    producing = {"send", "send_after", "send_throttled", "send_debounced", "insert", "publish"}
    for name in producing:
        assert "conn" in inspect.signature(getattr(PgQueue, name)).parameters, name


def test_claimed_columns_line_up_with_the_job_fields() -> None:
    # Claimed rows become Jobs positionally (the hot path builds no dicts), so the claim's
    # columns must be the Job's leading fields, in order.
    from dataclasses import fields

    from pgqueue._sql import JOB_COLUMNS

    columns = [c.strip() for c in JOB_COLUMNS.split(",")]
    names = [f.name for f in fields(pgqueue.Job)][: len(columns)]
    assert names == [*columns[:-5], "last_progress", "group", "errors", "depends_on", "trace"]
    assert columns[-5:] == ["progress", "group_key", "errors", "depends_on", "trace"]
    values = tuple(range(len(columns)))
    trace = {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
    job = pgqueue.Job.from_values(
        (1, "q", {"a": 1}, "active", *values[4:-4], "tenant", [], [7], trace)
    )
    assert (job.id, job.state, job.priority, job.last_progress, job.group, job.errors) == (
        1,
        pgqueue.JobState.active,
        4,
        len(columns) - 5,
        "tenant",
        [],
    )
    assert job.depends_on == [7]
    assert job.trace == trace


def test_the_version_is_the_installed_distributions() -> None:
    """``pgqueue.__version__`` and ``pgqueue --version`` say what pip installed (one number,
    read by the build from ``_version.py``)."""
    from importlib.metadata import version

    assert pgqueue.__version__ == version("pgqueue")
    assert re.fullmatch(r"\d+\.\d+\.\d+([abc]|rc|\.dev|\.post)?\d*", pgqueue.__version__)
