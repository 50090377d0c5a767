"""Handler registration: which parameter gets the data, which the Job, and option checks."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import BaseModel

import pgqueue
from pgqueue._registry import Registry, pattern_regex
from pgqueue.models import Job, JobState


class Payload(BaseModel):
    n: int


def job(data: Any = None) -> Job:
    return Job(id=7, name="q", data=data, state=JobState.active)


def test_data_model_and_job_parameters_are_found() -> None:
    def handler(data: Payload, job: Job) -> None: ...

    definition = Registry().register("q", handler)
    assert definition.data_model is Payload and definition.job_param == "job"
    args, kwargs = definition.call_args(job({"n": "3"}))
    assert args == [Payload(n=3)] and kwargs["job"].id == 7


def test_handler_may_take_only_the_job_or_nothing() -> None:
    def only_job(current: Job) -> None: ...

    def nothing() -> None: ...

    registry = Registry()
    assert registry.register("a", only_job).call_args(job(1)) == ([], {"current": job(1)})
    assert registry.register("b", nothing).call_args(job(1)) == ([], {})


def test_invalid_data_at_run_time_is_a_payload_error() -> None:
    def handler(data: Payload) -> None: ...

    definition = Registry().register("q", handler)
    with pytest.raises(pgqueue.InvalidPayloadError, match="Payload"):
        definition.call_args(job({"n": "x"}))


def test_options_split_into_queue_and_send_defaults() -> None:
    definition = Registry().register(
        "q", lambda data: None, options={"retry_limit": 3, "priority": 5}
    )
    assert definition.queue_options == {"retry_limit": 3}
    assert definition.send_options == {"priority": 5}


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"retry_limit": -1}, "retry_limit"),
        ({"nope": 1}, "nope"),
        ({"start_after": 5}, "start_after"),
        ({"expire_in": 0}, "expire_in"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], match: str) -> None:
    with pytest.raises(pgqueue.InvalidOptionError, match=match):
        Registry().register("q", lambda data: None, options=options)


def test_extra_required_parameters_and_duplicates_are_refused() -> None:
    def two_required(a: int, b: int) -> None: ...

    registry = Registry()
    with pytest.raises(pgqueue.InvalidInputError, match="'b'"):
        registry.register("q", two_required)
    registry.register("q", lambda data: None)
    with pytest.raises(pgqueue.InvalidInputError, match="already registered"):
        registry.register("q", lambda data: 1)

    def job_first(job: Job, data: int) -> None: ...

    # The job is passed by name and the data by position: the data comes first.
    with pytest.raises(pgqueue.InvalidInputError, match="'data' must come before"):
        registry.register("r", job_first)
    assert "r" not in registry


def test_catalogue_is_sorted_and_described_by_docstring() -> None:
    def zeta() -> None:
        """Last one.

        More text."""

    registry = Registry()
    registry.register("zeta", zeta)
    registry.register("alpha", lambda: None, description="First")
    assert [(d.name, d.description) for d in registry.definitions()] == [
        ("alpha", "First"),
        ("zeta", "Last one."),
    ]


def test_a_pattern_handler_serves_the_queues_it_matches_without_their_own() -> None:
    registry = Registry()

    def any_email(data: Any) -> None: ...

    def receipts(data: Any) -> None: ...

    registry.register("emails.*", any_email)
    registry.register("emails.receipt.*", receipts)
    registry.register("emails.receipt", receipts)
    assert registry.find("emails.welcome") is registry["emails.*"]
    assert registry.find("emails.receipt.eu") is registry["emails.receipt.*"]  # the longest
    assert registry.find("emails.receipt") is registry["emails.receipt"]  # its own
    assert registry.find("reports") is None and "reports" not in registry
    # Patterns are not queues: nothing of theirs is declared.
    assert [d.name for d in registry.undeclared()] == ["emails.receipt"]
    assert registry["emails.*"].is_pattern and not registry["emails.receipt"].is_pattern


def test_a_pattern_handler_takes_no_queue_options_and_a_bad_pattern_is_refused() -> None:
    registry = Registry()
    with pytest.raises(pgqueue.InvalidOptionError, match="retry_limit"):
        registry.register("emails.*", lambda data: None, options={"retry_limit": 3})
    registry.register("emails.*", lambda data: None, options={"priority": 3})  # a send option
    with pytest.raises(pgqueue.InvalidNameError, match="pattern"):
        registry.register("emails *", lambda data: None)


@pytest.mark.parametrize(
    ("pattern", "name"),
    [("emails.*", "emails.welcome"), ("a?c", "abc"), ("x[ab]y", "xay"), ("q-1/2:*", "q-1/2:3")],
)
def test_a_pattern_regex_matches_what_the_pattern_matches(pattern: str, name: str) -> None:
    assert re.fullmatch(pattern_regex(pattern), name)
    assert not re.fullmatch(pattern_regex(pattern), "other")
