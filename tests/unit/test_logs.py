"""The command's log options and formats."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from pgqueue._logs import JsonFormatter
from pgqueue.cli import build_parser


@pytest.mark.parametrize(
    ("argv", "level", "form"),
    [
        (["queues"], None, None),
        (["--log-level", "debug", "queues"], "DEBUG", None),
        (["queues", "--log-level", "Warning", "--log-format", "JSON"], "WARNING", "json"),
        (["--log-level", "error", "queues", "--log-level", "info"], "INFO", None),
    ],
)
def test_log_options_come_before_or_after_the_command_in_any_case(
    argv: list[str], level: str | None, form: str | None
) -> None:
    args = build_parser().parse_args(argv)
    assert (getattr(args, "log_level", None), getattr(args, "log_format", None)) == (level, form)


def test_a_bad_log_level_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["queues", "--log-level", "loud"])
    assert "invalid choice: 'LOUD'" in capsys.readouterr().err


def test_the_json_format_keeps_the_job_fields_and_the_traceback() -> None:
    try:
        raise ValueError("broken")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "pgqueue.worker", logging.WARNING, "x.py", 1, "job %s", (7,), exc_info
    )
    record.__dict__.update(queue="emails", job_id=7, attempt=2, duration=0.25)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "job 7" and entry["level"] == "WARNING"
    assert (entry["queue"], entry["job_id"], entry["attempt"], entry["duration"]) == (
        "emails",
        7,
        2,
        0.25,
    )
    assert entry["time"].endswith("+00:00")
    assert entry["traceback"].startswith("Traceback") and "ValueError: broken" in entry["traceback"]
