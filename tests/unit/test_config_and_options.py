"""Name rules, DSN checks, option parsing and payload encoding: pure logic, no database."""

from __future__ import annotations

import string
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

import pgqueue
from pgqueue._config import (
    check_dsn,
    check_name,
    check_schema,
    check_seconds,
    describe_dsn,
    resolve_dsn,
)
from pgqueue._payload import encode_json, error_output
from pgqueue.models import JobOptions, JobState, QueueOptions, parse_options

NAME_CHARS = string.ascii_letters + string.digits + "_.-/:"


@given(st.text(alphabet=NAME_CHARS, min_size=1, max_size=100).filter(lambda s: s[0] not in ".-/:"))
def test_valid_names_pass(name: str) -> None:
    assert check_name(name) == name


@given(st.text(min_size=1, max_size=30).filter(lambda s: any(c not in NAME_CHARS for c in s)))
def test_names_with_other_characters_fail(name: str) -> None:
    with pytest.raises(pgqueue.InvalidNameError):
        check_name(name)


@pytest.mark.parametrize("name", ["", "x" * 101, ".hidden", "-dash", 3, None])
def test_bad_names(name: Any) -> None:
    with pytest.raises(pgqueue.InvalidNameError):
        check_name(name)


def test_schema_rules() -> None:
    assert check_schema("pgqueue") == "pgqueue"
    assert check_schema("_x9") == "_x9"
    for bad in ("Pgqueue", "pg_x", "a-b", "", "a" * 51, "9a"):
        with pytest.raises(pgqueue.InvalidNameError):
            check_schema(bad)


def test_dsn_description_hides_credentials() -> None:
    dsn = "postgresql://user:secret@db.example:6543/app"
    assert check_dsn(dsn) == dsn
    assert describe_dsn(dsn) == "host=db.example port=6543 dbname=app"


@pytest.mark.parametrize(
    ("dsn", "described"),
    [
        ("host=db port=6000 dbname=x user=u password=hunter2", "host=db port=6000 dbname=x"),
        ("postgresql://u:hunter2@db/x", "host=db port=5432 dbname=x"),
        ("postgresql://u:hunter2@a:1,b:2/x", "host=a,b port=1,2 dbname=x"),
    ],
)
def test_describe_dsn_never_shows_credentials(dsn: str, described: str) -> None:
    assert describe_dsn(dsn) == described
    assert "hunter2" not in describe_dsn(dsn)


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://u:hunter2@db:port/x",
        "host=db password=hunter2 port=x5",
        "postgresql://u:hunter2@[::1/x",
        "nonsense",
        "host=db password",
    ],
)
def test_check_dsn_refuses_without_echoing_the_password(dsn: str) -> None:
    with pytest.raises(pgqueue.InvalidDsnError) as raised:
        check_dsn(dsn)
    assert "hunter2" not in str(raised.value)


def test_resolve_dsn_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGQUEUE_DATABASE_URL", raising=False)
    assert resolve_dsn(None) is None  # the embedded default
    monkeypatch.setenv("PGQUEUE_DATABASE_URL", "")
    assert resolve_dsn(None) is None
    monkeypatch.setenv("PGQUEUE_DATABASE_URL", "postgresql://env/db")
    assert resolve_dsn(None) == "postgresql://env/db"
    assert resolve_dsn("postgresql://arg/db") == "postgresql://arg/db"
    monkeypatch.setenv("PGQUEUE_DATABASE_URL", "postgresql://x:y@h:bad/db")
    with pytest.raises(pgqueue.InvalidDsnError):
        resolve_dsn(None)


def test_options_parse_seconds_and_timedeltas() -> None:
    parsed = parse_options(JobOptions, {"expire_in": timedelta(minutes=2), "retry_delay": 1.5})
    assert parsed.expire_in == 120 and parsed.retry_delay == 1.5


def test_start_after_forms() -> None:
    # A date stays a date; a delay stays a delay, for the database to add to its clock.
    at = datetime(2031, 1, 1, tzinfo=timezone.utc)
    assert parse_options(JobOptions, {"start_after": at}).start_after == at
    assert parse_options(JobOptions, {"start_after": 10}).start_after == 10.0
    assert parse_options(JobOptions, {"start_after": timedelta(minutes=1)}).start_after == 60.0


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"retry_limit": -1}, "retry_limit"),
        ({"retry_limit": "many"}, "retry_limit"),
        ({"priority": 2**31}, "priority"),
        ({"expire_in": 0}, "expire_in"),
        ({"expire_in": float("inf")}, "expire_in"),
        ({"expire_in": True}, "expire_in"),
        ({"heartbeat_seconds": -1}, "heartbeat_seconds"),
        ({"singleton_seconds": 0}, "singleton_seconds"),
        ({"singleton_key": ""}, "singleton_key"),
        ({"start_after": -5}, "start_after"),
        ({"start_after": datetime(2030, 1, 1)}, "start_after"),
        ({"dead_letter": "bad name"}, "dead_letter"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_options_name_the_option(options: dict[str, Any], named: str) -> None:
    with pytest.raises(pgqueue.InvalidOptionError, match=named):
        parse_options(JobOptions, options)


# A limit of (count, seconds) refuses these, for the queue and for each group.
_BAD_RATE_LIMITS: list[object] = [
    50,
    (50,),
    (50, 1, 2),
    (0, 1),
    (10_001, 1),
    (True, 1),
    (1.5, 1),
    ("50", 1),
    (50, 0),
    (50, -1),
    (50, float("nan")),
    (50, float("inf")),
    (50, True),
    (50, "1"),
    (50, timedelta(0)),
    (50, 1e16),
    "50/s",
]

# Bad values for every option; a test below fails when an option is added without entries.
BAD_VALUES: dict[str, list[Any]] = {
    "retry_limit": [-1, 1.5, "many", True, 2**31, float("nan"), "3"],
    "retry_delay": [-1, "soon", True, float("inf"), float("nan"), timedelta(seconds=-1), 1e16, "3"],
    "retry_backoff": ["maybe", 2, [], 0.5, 1, "yes", "true"],
    "retry_delay_max": [0, -1, True, float("nan"), "x", timedelta(0), 1e16],
    "expire_in": [
        0,
        -3,
        True,
        float("inf"),
        "x",
        timedelta(seconds=-1),
        1e308,
        timedelta(days=3651),
        "60",
    ],
    "heartbeat_seconds": [0, -1, True, "x", float("inf"), 1e16],
    "retention": [0, -1, True, timedelta(0), float("-inf"), 1e16],
    "delete_after": [-1, True, float("inf"), "x", 1e16],
    "dead_letter": ["bad name", "", 5, True, "x" * 101],
    "concurrency": [0, -1, 1.5, True, "3", 2**31, float("inf")],
    "group_concurrency": [0, -1, 1.5, True, "3", 2**31],
    "ordered": ["yes", 1, 0, "true", 1.0],
    "group": ["", "x" * 256, 5, True, "a\x00b", ["a"]],
    "rate_limit": _BAD_RATE_LIMITS,
    "group_rate_limit": _BAD_RATE_LIMITS,
    "priority": [2**31, -(2**31), 1.5, True, "high", float("inf"), "1"],
    "start_after": [
        -1,
        "tomorrow",
        True,
        float("nan"),
        float("inf"),
        datetime(2030, 1, 1),
        timedelta(seconds=-1),
        [1],
        1e12,
        "60",
    ],
    "singleton_key": ["", "x" * 256, 5, True, "a\x00b", "\ud800"],
    "singleton_seconds": [0, -1, 1.5, True, 2**31, "x", "60"],
    "singleton_next_slot": ["maybe", 2, [], 0.5, 1, "yes"],
    "policy": ["lifo", 3, "", True],
    "description": [5, "x" * 10_001, "nul \x00"],
}


def test_every_option_has_bad_values_listed() -> None:
    assert set(JobOptions.model_fields) | set(QueueOptions.model_fields) == set(BAD_VALUES)


@pytest.mark.parametrize(
    ("option", "value"), [(k, v) for k, values in BAD_VALUES.items() for v in values]
)
def test_every_bad_option_value_is_refused_by_name(option: str, value: Any) -> None:
    models = [m for m in (JobOptions, QueueOptions) if option in m.model_fields]
    for model in models:
        with pytest.raises(pgqueue.InvalidOptionError, match=f"'{option}'|{option} ") as raised:
            parse_options(model, {option: value})
        assert len(str(raised.value)) < 400  # long inputs are abbreviated, not echoed whole


@given(
    st.sampled_from(sorted(set(JobOptions.model_fields) - {"start_after"})),
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=20),
        st.timedeltas(),
        st.lists(st.integers(), max_size=2),
    ),
)
def test_options_accept_or_refuse_by_name_never_crash(option: str, value: Any) -> None:
    try:
        parsed = parse_options(JobOptions, {option: value})
    except pgqueue.InvalidOptionError as exc:
        message = str(exc)
    else:
        assert getattr(parsed, option) is None or value is not None
        return
    assert option in message


def test_queue_options_refuse_job_only_ones_and_bad_policies() -> None:
    with pytest.raises(pgqueue.InvalidOptionError, match="priority"):
        parse_options(QueueOptions, {"priority": 1})
    with pytest.raises(pgqueue.InvalidOptionError, match="policy"):
        parse_options(QueueOptions, {"policy": "lifo"})


class Model(BaseModel):
    when: datetime
    tags: list[str]


def test_payload_edge_cases() -> None:
    assert encode_json("\\u0000") == '"\\\\u0000"'  # a backslash and "u0000": not a NUL
    with pytest.raises(pgqueue.InvalidPayloadError, match="NUL"):
        encode_json("\\" + "\x00")  # a backslash, then a real NUL
    with pytest.raises(pgqueue.InvalidPayloadError, match="NUL"):
        encode_json({"key\x00": 1})
    assert encode_json("\U0001f600") == '"\\ud83d\\ude00"'  # astral: a surrogate pair
    for lone in ("\ud800", "x\udfff", {"k": ["\udbff"]}):
        with pytest.raises(pgqueue.InvalidPayloadError, match="surrogate"):
            encode_json(lone)
    with pytest.raises(pgqueue.InvalidPayloadError, match="not JSON-serialisable"):
        encode_json({"what": object()})
    # What pydantic encodes, pgqueue encodes the same way.
    assert encode_json(
        {"when": datetime(2030, 1, 1), "id": UUID(int=1), "n": Decimal("1.5"), "tags": {"a"}}
    ) == (
        '{"when":"2030-01-01T00:00:00","id":"00000000-0000-0000-0000-000000000001",'
        '"n":"1.5","tags":["a"]}'
    )
    deep: dict[str, Any] = {}
    for _ in range(5000):
        deep = {"a": deep}
    with pytest.raises(pgqueue.InvalidPayloadError, match="nested too deeply"):
        encode_json(deep)


def test_payload_encoding() -> None:
    at = datetime(2030, 5, 1, tzinfo=timezone.utc)
    assert encode_json(Model(when=at, tags=["a"])) == '{"when":"2030-05-01T00:00:00Z","tags":["a"]}'
    assert encode_json({"nested": Model(when=at, tags=[])}).startswith('{"nested":{"when"')
    for bad in ({"x": float("nan")}, {"c": object()}, "nul\x00"):
        with pytest.raises(pgqueue.InvalidPayloadError):
            encode_json(bad)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text().filter(lambda s: "\x00" not in s),
        lambda inner: (
            st.lists(inner) | st.dictionaries(st.text().filter(lambda s: "\x00" not in s), inner)
        ),
        max_leaves=10,
    )
)
def test_any_json_value_encodes(value: Any) -> None:
    import json

    assert json.loads(encode_json(value)) == value


@given(st.text(alphabet=st.sampled_from('\\u0x\x00"')))
def test_nul_detection_is_exact(text: str) -> None:
    if "\x00" in text:
        with pytest.raises(pgqueue.InvalidPayloadError, match="NUL"):
            encode_json(text)
    else:
        import json

        assert json.loads(encode_json(text)) == text


def test_error_output_of_an_exception() -> None:
    try:
        raise KeyError("k")
    except KeyError as exc:
        out = error_output(exc)
    assert out["type"] == "KeyError" and "Traceback" in out["traceback"]
    assert error_output("text") == {"message": "text"}


def test_state_order_and_finished() -> None:
    assert [s.value for s in JobState] == [
        "created",
        "retry",
        "active",
        "completed",
        "expired",
        "cancelled",
        "failed",
    ]
    assert {s for s in JobState if s.finished} == {
        JobState.completed,
        JobState.expired,
        JobState.cancelled,
        JobState.failed,
    }


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1, -0.5, True, "5", None, 1e9])
def test_a_wait_in_seconds_refuses_what_is_not_a_sane_number(bad: object) -> None:
    with pytest.raises(pgqueue.InvalidOptionError, match="--timeout"):
        check_seconds("--timeout", bad)


def test_a_wait_in_seconds_takes_zero_to_a_year() -> None:
    assert [check_seconds("t", v) for v in (0, 1, 2.5, 366 * 86400)] == [0.0, 1.0, 2.5, 31622400.0]


@pytest.mark.parametrize(
    "options",
    [{"prepare": "no"}, {"listen": 0}, {"listen_dsn": ""}, {"listen_dsn": 5}],
)
def test_connection_options_are_checked(options: dict[str, Any]) -> None:
    with pytest.raises(pgqueue.InvalidInputError):
        pgqueue.PgQueue("postgresql://localhost/x", **options)


@pytest.mark.parametrize("listen_dsn", ["garbage", "host=x port=abc", "postgresql://h:notaport/x"])
def test_a_listen_dsn_libpq_cannot_parse_is_refused_on_construction(listen_dsn: str) -> None:
    with pytest.raises(pgqueue.InvalidDsnError):
        pgqueue.PgQueue("postgresql://localhost/x", listen_dsn=listen_dsn)


def test_connection_options_default_to_prepared_and_listening() -> None:
    pq = pgqueue.AsyncPgQueue("postgresql://localhost/x", listen_dsn="postgresql://direct/x")
    assert pq._connections() == {
        "prepare": True,
        "listen": True,
        "listen_dsn": "postgresql://direct/x",
    }
    assert pq._listen_to("postgresql://localhost/x") == "postgresql://direct/x"
    assert pgqueue.PgQueue("postgresql://localhost/x", listen=False)._listen_to("d") is None
