"""What a run logged: the lines of ``job.log()`` and, when captured, the ``logging`` records
emitted inside its handler, kept bounded and stored with the attempt when the run ends."""

from __future__ import annotations

import contextvars
import json
import logging
import threading
import traceback
from collections import deque
from datetime import datetime, timezone
from typing import Any

from ._payload import storable
from .errors import InvalidOptionError

__all__ = [
    "MAX_LINES",
    "MAX_LINE_CHARS",
    "RunLog",
    "capture_level",
    "capturing",
    "enter_run",
    "leave_run",
    "level_name",
]

# A run keeps its last MAX_LINES lines, each cut to MAX_LINE_CHARS characters (its head and
# its tail, where a traceback names the error): an attempt's logs stay under about 100 KiB
# of text however much its handler logs (the rest is counted).
MAX_LINES = 100
MAX_LINE_CHARS = 1000
_HEAD = 300
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}
_NAMES: tuple[tuple[int, str], ...] = (
    (logging.CRITICAL, "critical"),
    (logging.ERROR, "error"),
    (logging.WARNING, "warning"),
    (logging.INFO, "info"),
)


def level_name(level: int) -> str:
    """The standard level at or below ``level`` (a custom 25 is info), lower case."""
    return next((name for number, name in _NAMES if level >= number), "debug")


def check_level(level: object, what: str = "a log level") -> int:
    """``level`` as a number: a standard name (any case) or a number from 1 to 50."""
    if isinstance(level, str) and level.lower() in _LEVELS:
        return _LEVELS[level.lower()]
    if isinstance(level, int) and not isinstance(level, bool) and 1 <= level <= logging.CRITICAL:
        return level
    raise InvalidOptionError(
        f"{what} is debug, info, warning, error or critical, or a number from 1 to 50, "
        f"got {level!r}"
    )


def capture_level(value: bool | int | str | None) -> int | None:
    """The least ``logging`` level captured for ``capture_logs`` (None: none; True: INFO)."""
    if value is None or value is False:
        return None
    if value is True:
        return logging.INFO
    return check_level(value, "capture_logs (when not True or False)")


class RunLog:
    """The lines one run logged, oldest first, and how many older ones were dropped; with
    ``capture`` (a level), the ``logging`` records of that level and above emitted in its
    context join them."""

    __slots__ = ("_lock", "capture", "dropped", "lines")

    def __init__(self, capture: int | None = None) -> None:
        self.lines: deque[dict[str, str]] = deque(maxlen=MAX_LINES)
        self.dropped = 0
        self.capture = capture
        self._lock = threading.Lock()  # a sync handler's threads may log at once

    def add(self, level: int, message: object, at: datetime | None = None) -> None:
        """Keep a line (the oldest goes once there are ``MAX_LINES``)."""
        try:
            text = storable(str(message))
        except Exception as exc:  # a message whose str() fails must not fail the run
            text = f"<unprintable {type(message).__name__}: {exc!r}>"
        if len(text) > MAX_LINE_CHARS:
            text = f"{text[:_HEAD]}…{text[len(text) - (MAX_LINE_CHARS - _HEAD - 1) :]}"
        line = {
            "at": (at or datetime.now(timezone.utc)).isoformat(),
            "level": level_name(level),
            "message": text,
        }
        with self._lock:
            if len(self.lines) == MAX_LINES:
                self.dropped += 1
            self.lines.append(line)

    def encode(self, attempt: int) -> str | None:
        """The attempt's entry as JSON text (None if nothing was logged)."""
        with self._lock:
            if not self.lines:
                return None
            entry = {"attempt": attempt, "lines": list(self.lines), "dropped": self.dropped}
        return json.dumps(entry, ensure_ascii=False)


# The log of the run the current context belongs to, while a capturing worker runs it.
_current: contextvars.ContextVar[RunLog | None] = contextvars.ContextVar(
    "pgqueue_run_log", default=None
)


def enter_run(log: RunLog) -> contextvars.Token[RunLog | None]:
    """Make ``log`` the current run's (in this context)."""
    return _current.set(log)


def leave_run(token: contextvars.Token[RunLog | None]) -> None:
    """Undo :func:`enter_run`."""
    _current.reset(token)


def _message(record: logging.LogRecord) -> str:
    try:
        text = record.getMessage()
    except Exception as exc:  # a bad %-format: the app's own handlers report it
        text = f"{record.msg!r} % {record.args!r} ({type(exc).__name__}: {exc})"
    if record.exc_info and record.exc_info[1] is not None:
        text += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
    if record.stack_info:
        text += "\n" + record.stack_info
    return text


# Records are taken as they are made (a record factory), not by a handler on the root
# logger: a handler there would make logging count as configured (an app that configured
# nothing would no longer see its warnings) and would see only what propagates to it.
_factory_lock = threading.Lock()
_users = 0
_installed = False  # in the factory chain (it stays when another was set over it)
_previous: Any = None


def _capture_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record: logging.LogRecord = _previous(*args, **kwargs)
    run = _current.get()
    if (
        run is not None
        and run.capture is not None
        and record.levelno >= run.capture
        and record.name != "pgqueue"
        and not record.name.startswith("pgqueue.")
    ):
        run.add(
            record.levelno, _message(record), datetime.fromtimestamp(record.created, timezone.utc)
        )
    return record


class capturing:
    """While entered, records made in a run's context (at or above its ``capture`` level)
    join its log; one record factory for every capturing worker of the process. A
    ``level`` of None captures nothing."""

    def __init__(self, level: int | None) -> None:
        self._on = level is not None

    def __enter__(self) -> None:
        global _users, _previous, _installed
        if not self._on:
            return
        with _factory_lock:
            _users += 1
            if not _installed:
                _previous = logging.getLogRecordFactory()
                logging.setLogRecordFactory(_capture_factory)
                _installed = True

    def __exit__(self, *exc: Any) -> None:
        global _users, _installed
        if not self._on:
            return
        with _factory_lock:
            _users -= 1
            # Put back what was there, unless someone set a factory of their own since
            # (theirs calls ours: ours stays, capturing nothing outside runs).
            if _users == 0 and logging.getLogRecordFactory() is _capture_factory:
                logging.setLogRecordFactory(_previous)
                _installed = False
