"""The command's log options and formats."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from pgqueue._logs import JsonFormatter, configure
from pgqueue._runlog import MAX_LINE_CHARS, MAX_LINES, RunLog, _message
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


@pytest.mark.parametrize(
    ("level", "capture", "made", "printed"),
    [
        ("INFO", None, logging.INFO, logging.INFO),
        ("INFO", "debug", logging.DEBUG, logging.INFO),  # made for the runs, not printed
        ("DEBUG", "error", logging.DEBUG, logging.DEBUG),
    ],
)
def test_a_capture_level_below_the_printed_one_still_makes_its_records(
    level: str, capture: str | None, made: int, printed: int
) -> None:
    root = logging.getLogger()
    kept = (root.level, root.handlers[:])
    try:
        configure(level, "plain", capture=capture)
        (handler,) = root.handlers
        assert (root.level, handler.level) == (made, printed)
    finally:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        root.setLevel(kept[0])
        for handler in kept[1]:
            root.addHandler(handler)


def test_run_log_lines_are_bounded_and_storable() -> None:
    run = RunLog()
    assert run.encode(1) is None
    for n in range(MAX_LINES + 5):
        run.add(logging.INFO + n % 3, f"line {n}")
    run.add(35, "x" * 5000)
    entry = json.loads(run.encode(3) or "")
    assert (entry["attempt"], entry["dropped"], len(entry["lines"])) == (3, 6, MAX_LINES)
    assert entry["lines"][0]["message"] == "line 6"
    assert entry["lines"][-1]["level"] == "warning"  # 35: the standard level below it
    assert len(entry["lines"][-1]["message"]) == MAX_LINE_CHARS


def test_a_record_whose_message_cannot_be_formatted_is_kept_as_written() -> None:
    record = logging.LogRecord("app", logging.INFO, __file__, 1, "bad %d", ("x",), None)
    assert _message(record).startswith("'bad %d' % ('x',) (TypeError: ")
