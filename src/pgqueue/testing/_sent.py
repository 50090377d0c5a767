"""What was sent to a queue, and assertions on it with messages that show what was sent."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from .._async.queue import AsyncPgQueue
from .._payload import encode_json
from .._sync.queue import PgQueue
from ..errors import InvalidInputError
from ..models import Job
from ._eager import eager_jobs

__all__ = ["ANY", "aassert_sent", "asent_jobs", "assert_sent", "matches", "sent_jobs"]

_PAGE = 10_000
ANY: Any = object()  # no condition on the data


def matches(expected: Any, actual: Any) -> bool:
    """Whether a job's ``actual`` data satisfies ``expected``: :data:`ANY` matches
    anything; a callable is a predicate on the data; a mapping (or a pydantic model, as
    its JSON) matches data holding those keys with matching values, nested mappings
    matched the same way (a subset match); a list or tuple matches a list of as many
    items, each matching; anything else must equal the data once encoded as a send
    encodes it (a datetime, UUID or Decimal matches what its job holds).

    Example:
        ```python
        matches({"user": {"id": 7}}, {"user": {"id": 7, "name": "Ada"}, "n": 2})  # True
        matches([1, ANY], [1, "anything"])  # True
        matches(lambda data: data["total"] > 10, {"total": 30})  # True
        matches({"id": 8}, {"id": 7})  # False
        ```
    """
    if expected is ANY:
        return True
    if callable(expected) and not isinstance(expected, type | BaseModel):
        return bool(expected(actual))
    if isinstance(expected, BaseModel):
        expected = expected.model_dump(mode="json", by_alias=True)
    if isinstance(expected, Mapping):
        return isinstance(actual, Mapping) and all(
            key in actual and matches(value, actual[key]) for key, value in expected.items()
        )
    return _equal(expected, actual)


def _equal(expected: Any, actual: Any) -> bool:
    """``matches`` inside a list: a mapping there must have exactly the keys it has."""
    if isinstance(expected, Mapping) and not isinstance(expected, BaseModel):
        return (
            isinstance(actual, Mapping)
            and set(expected) == set(actual)
            and all(matches(value, actual[key]) for key, value in expected.items())
        )
    if isinstance(expected, list | tuple):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(_equal(e, a) for e, a in zip(expected, actual, strict=True))
        )
    if (
        expected is ANY
        or isinstance(expected, BaseModel)
        or (callable(expected) and not isinstance(expected, type))
    ):
        return matches(expected, actual)
    # As the job holds it: what the JSON of a send makes of dates, UUIDs, decimals...
    with contextlib.suppress(InvalidInputError):
        expected = json.loads(encode_json(expected, "expected data"))
    return bool(expected == actual)


def _describe(name: str, jobs: list[Job], data: Any, count: int | None, found: int) -> str:
    wanted = "a job" if count is None else f"{count} job{'s' * (count != 1)}"
    condition = "" if data is ANY else f" with data matching {data!r}"
    lines = [f"expected {wanted} sent to {name!r}{condition}, found {found}."]
    if not jobs:
        lines.append(f"No job was sent to {name!r}.")
    else:
        lines.append(f"Jobs sent to {name!r} ({len(jobs)}):")
        for job in jobs[:50]:
            lines.append(f"  #{job.id} [{job.state.value}] data={job.data!r}")
        if len(jobs) > 50:
            lines.append(f"  ... and {len(jobs) - 50} more")
    return "\n".join(lines)


def _check(name: object, count: object) -> None:
    if not isinstance(name, str):
        raise InvalidInputError(f"name must be a queue name, got {name!r}")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise InvalidInputError(f"count must be a number of jobs, got {count!r}")


def _assert(name: str, jobs: list[Job], data: Any, count: int | None) -> list[Job]:
    found = jobs if data is ANY else [j for j in jobs if matches(data, j.data)]
    if (count is None and not found) or (count is not None and len(found) != count):
        raise AssertionError(_describe(name, jobs, data, count, len(found)))
    return found


def sent_jobs(queue: PgQueue, name: str) -> list[Job]:
    """Every job sent to queue ``name``, in the job table and the archive (whatever its
    state), in id order; under :func:`eager`, the jobs eager mode sent.

    Example:
        ```python
        def test_signing_up_sends_one_email(pgqueue_queue):
            sign_up("ada@example.com")  # the application's code: it sends the job
            jobs = sent_jobs(pgqueue_queue, "welcome-email")
            assert [job.data["email"] for job in jobs] == ["ada@example.com"]
        ```
    """
    _check(name, None)
    recorded = eager_jobs(queue)
    if recorded is not None:
        return [j for j in recorded.jobs if j.name == name]
    jobs: list[Job] = []
    while True:
        page = queue.find_jobs(name, archived=True, limit=_PAGE, after=jobs[-1].id if jobs else 0)
        jobs += page
        if len(page) < _PAGE:
            return jobs


async def asent_jobs(queue: AsyncPgQueue, name: str) -> list[Job]:
    """Every job sent to queue ``name`` (see :func:`sent_jobs`).

    Example:
        ```python
        async def test_signing_up_sends_one_email(pgqueue_aqueue):
            await sign_up("ada@example.com")  # the application's code: it sends the job
            jobs = await asent_jobs(pgqueue_aqueue, "welcome-email")
            assert [job.data["email"] for job in jobs] == ["ada@example.com"]
        ```
    """
    _check(name, None)
    recorded = eager_jobs(queue)
    if recorded is not None:
        return [j for j in recorded.jobs if j.name == name]
    jobs: list[Job] = []
    while True:
        after = jobs[-1].id if jobs else 0
        page = await queue.find_jobs(name, archived=True, limit=_PAGE, after=after)
        jobs += page
        if len(page) < _PAGE:
            return jobs


def assert_sent(
    queue: PgQueue,
    name: str,
    data: Any = ANY,
    *,
    count: int | None = None,
) -> list[Job]:
    """Assert that jobs were sent to queue ``name`` whose data matches ``data`` (a subset
    of keys for a mapping or a pydantic model, a predicate for a callable, else
    equality; see :func:`matches`): ``count`` of them exactly, or at least one. Returns
    those jobs. The AssertionError lists every job sent to ``name``.

    Example:
        ```python
        def test_signing_up_sends_a_welcome_email(pgqueue_queue):
            sign_up("ada@example.com")  # the application's code: it sends the job
            assert_sent(pgqueue_queue, "welcome-email", {"email": "ada@example.com"}, count=1)
            assert_sent(pgqueue_queue, "audit", lambda data: data["event"] == "sign-up")
        ```
    """
    _check(name, count)
    return _assert(name, sent_jobs(queue, name), data, count)


async def aassert_sent(
    queue: AsyncPgQueue,
    name: str,
    data: Any = ANY,
    *,
    count: int | None = None,
) -> list[Job]:
    """Assert that jobs were sent to queue ``name`` (see :func:`assert_sent`).

    Example:
        ```python
        async def test_signing_up_sends_a_welcome_email(pgqueue_aqueue):
            await sign_up("ada@example.com")  # the application's code: it sends the job
            await aassert_sent(pgqueue_aqueue, "welcome-email", {"email": "ada@example.com"})
        ```
    """
    _check(name, count)
    return _assert(name, await asent_jobs(queue, name), data, count)
