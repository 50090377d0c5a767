"""What goes into a row besides its options: data and outputs as JSON, errors as stored
outputs, and the ids (and runs) the API takes, each checked before anything is written."""

from __future__ import annotations

import json
import re
import traceback
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticSerializationError, to_jsonable_python

from .errors import InvalidInputError, InvalidPayloadError
from .models import Job

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "encode_json",
    "error_output",
    "job_ids",
    "job_runs",
    "storable",
]

# The most JSON one job's data or output may take (PostgreSQL's jsonb holds up to 256 MiB).
MAX_PAYLOAD_BYTES = 200 * 1024 * 1024
_INT8 = 2**63 - 1


def encode_json(value: Any, what: str = "data") -> str:
    """``value`` as JSON text: pydantic models are dumped, and what pydantic can encode
    (dates, UUIDs, decimals, ...) is encoded as it would. Raises InvalidPayloadError."""
    if value is None:
        return "null"
    if isinstance(value, BaseModel):  # by alias: what the model validates again
        value = value.model_dump(mode="json", by_alias=True)
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"), default=_default)
    except (TypeError, ValueError) as exc:
        raise InvalidPayloadError(f"{what} is not JSON-serialisable: {exc}") from None
    except RecursionError:
        raise InvalidPayloadError(f"{what} is nested too deeply to encode") from None
    if len(text) > MAX_PAYLOAD_BYTES:  # characters, a lower bound of the bytes
        raise InvalidPayloadError(
            f"{what} is {len(text):,} characters of JSON; at most {MAX_PAYLOAD_BYTES:,} fit "
            "in one job (keep large payloads elsewhere and send a reference)"
        )
    if "\\u0000" in text and _NUL.search(text):
        raise InvalidPayloadError(f"{what} contains a NUL character, which PostgreSQL refuses")
    if "\\ud" in text:  # a surrogate escape: fine in pairs (astral characters), not alone
        try:
            json.dumps(value, ensure_ascii=False, default=_default).encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidPayloadError(
                f"{what} contains a lone surrogate character, which is not valid Unicode"
            ) from None
    return text


# An escaped NUL, not an escaped backslash followed by the letters u0000.
_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, Iterator | AsyncIterator):  # it may never end: not a value
        raise TypeError(f"a {type(value).__name__} is an iterator, not a value (make it a list)")
    try:
        return to_jsonable_python(value)
    except PydanticSerializationError:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable") from None


def error_output(error: object) -> Any:
    """What a failure stores as the job's output: an exception's type, message and
    traceback (with what PostgreSQL cannot store, NUL and lone surrogates, replaced)."""
    if isinstance(error, BaseException):
        try:
            message = str(error)
        except Exception as exc:  # its __str__ is broken: say so rather than lose the failure
            message = f"<str() of this {type(error).__name__} raised {type(exc).__name__}>"
        try:
            trace = "".join(traceback.format_exception(error))
        except Exception as exc:
            trace = f"<its traceback could not be formatted: {type(exc).__name__}>"
        return {
            "type": type(error).__name__,
            "message": storable(clip(message)),
            "traceback": storable(clip(trace)),
        }
    if error is None:
        return {"message": None}
    if isinstance(error, str):
        return {"message": storable(clip(error))}
    return error


# The most characters of an error's message, and of its traceback, a job stores.
MAX_ERROR_CHARS = 64 * 1024


def clip(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text``, or its start and end around a note of what was cut when it is longer
    than ``limit`` characters."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half:,} characters cut ...]\n{text[-half:]}"


def storable(text: str) -> str:
    """``text`` with what PostgreSQL cannot store in text (NUL, lone surrogates) replaced."""
    return _UNSTORABLE.sub("\ufffd", text)


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def job_ids(ids: int | Iterable[int]) -> list[int]:
    """A list of job ids from one id or many; refuses anything that is not an int."""
    if isinstance(ids, int) or not isinstance(ids, Iterable) or isinstance(ids, str | bytes):
        items: list[Any] = [ids]
    else:
        items = list(ids)
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int):
            raise InvalidInputError(f"job ids must be integers, got {item!r}")
    return items


def job_runs(
    jobs: Job | int | Iterable[Job | int],
) -> tuple[list[int], list[int | None]]:
    """The runs named by fetched jobs (id and run_id) or by bare ids (run None: the run that
    holds the job now, whichever it is)."""
    if isinstance(jobs, Mapping):
        raise InvalidInputError("expected fetched Jobs or job ids, got a mapping")
    if (
        isinstance(jobs, Job | int)
        or not isinstance(jobs, Iterable)
        or isinstance(jobs, str | bytes)
    ):
        items: list[Any] = [jobs]
    else:
        items = list(jobs)
    ids: list[int] = []
    runs: list[int | None] = []
    for item in items:
        if isinstance(item, Job):
            ids.append(item.id)
            runs.append(item.run_id)
        elif isinstance(item, int) and not isinstance(item, bool) and 0 < item <= _INT8:
            ids.append(item)
            runs.append(None)
        else:
            raise InvalidInputError(f"expected fetched Jobs or job ids, got {item!r}")
    return ids, runs
