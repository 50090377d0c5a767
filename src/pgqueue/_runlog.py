"""What a run logged: the lines of ``job.log()`` and, when captured, the ``logging`` records
emitted inside its handler, kept bounded and stored with the attempt when the run ends."""

from __future__ import annotations

import contextvars
import json
import logging
import threading
from datetime import datetime, timezone
from typing import Any

from ._payload import storable
from .errors import InvalidOptionError

__all__ = ["MAX_LINES", "MAX_LINE_CHARS", "RunLog", "capture_level", "capturing"]

# A run keeps its last MAX_LINES lines, each cut to MAX_LINE_CHARS characters: an attempt's
# logs stay under about 100 KiB however much its handler logs (the rest is counted).
MAX_LINES = 100
MAX_LINE_CHARS = 1000
_LEVELS = {"debug", "info", "warning", "error", "critical"}


class RunLog:
    """The lines one run logged, oldest first, and how many older ones were dropped."""

    __slots__ = ("_lock", "dropped", "lines")

    def __init__(self) -> None:
        self.lines: list[dict[str, str]] = []
        self.dropped = 0
        self._lock = threading.Lock()  # a sync handler's threads may log at once

    def add(self, level: str, message: object, at: datetime | None = None) -> None:
        """Keep a line (the oldest goes once there are ``MAX_LINES``)."""
        try:
            text = storable(str(message))
        except Exception as exc:  # a message whose str() fails must not fail the run
            text = f"<unprintable {type(message).__name__}: {exc!r}>"
        if len(text) > MAX_LINE_CHARS:
            text = text[: MAX_LINE_CHARS - 1] + "…"
        line = {
            "at": (at or datetime.now(timezone.utc)).isoformat(),
            "level": level,
            "message": text,
        }
        with self._lock:
            self.lines.append(line)
            if len(self.lines) > MAX_LINES:
                del self.lines[0]
                self.dropped += 1

    def encode(self, attempt: int) -> str | None:
        """The attempt's entry as JSON text (None if nothing was logged)."""
        with self._lock:
            if not self.lines:
                return None
            entry = {"attempt": attempt, "lines": self.lines, "dropped": self.dropped}
            return json.dumps(entry, ensure_ascii=False)


def check_level(level: object) -> str:
    """``level`` as one of debug, info, warning, error, critical (any case)."""
    if isinstance(level, str) and level.lower() in _LEVELS:
        return level.lower()
    raise InvalidOptionError(f"a log level is one of {', '.join(sorted(_LEVELS))}, got {level!r}")


def capture_level(value: bool | int | str | None) -> int | None:
    """The least ``logging`` level captured for ``capture_logs`` (None: none; True: INFO)."""
    if value is None or value is False:
        return None
    if value is True:
        return logging.INFO
    if isinstance(value, str):
        number: int = logging.getLevelName(check_level(value).upper())
        return number
    if isinstance(value, int) and logging.DEBUG <= value <= logging.CRITICAL:
        return value
    raise InvalidOptionError(
        f"capture_logs is True, False, or a level (name or number), got {value!r}"
    )


# The log of the run the current context belongs to, while a capturing worker runs it.
_current: contextvars.ContextVar[RunLog | None] = contextvars.ContextVar(
    "pgqueue_run_log", default=None
)


class _Capture(logging.Handler):
    """On the root logger while a worker captures: a record emitted inside a handler joins
    that run's log. pgqueue's own records are left out (they describe the run)."""

    def emit(self, record: logging.LogRecord) -> None:
        run = _current.get()
        if run is None or record.name.startswith("pgqueue"):
            return
        try:
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
        except Exception:
            self.handleError(record)
            return
        at = datetime.fromtimestamp(record.created, timezone.utc)
        run.add(record.levelname.lower(), message, at)


_handler = _Capture()
_users = 0
_users_lock = threading.Lock()


class capturing:
    """While entered, records of ``level`` and above reach the run log in context (one
    handler on the root logger, shared by every capturing worker of the process); a
    ``level`` of None captures nothing."""

    def __init__(self, level: int | None) -> None:
        self._level = level

    def __enter__(self) -> None:
        global _users
        if self._level is None:
            return
        with _users_lock:
            _users += 1
            if _users == 1:
                _handler.setLevel(self._level)
                logging.getLogger().addHandler(_handler)
            else:  # the most any of the capturing workers asks for
                _handler.setLevel(min(self._level, _handler.level))

    def __exit__(self, *exc: Any) -> None:
        global _users
        if self._level is None:
            return
        with _users_lock:
            _users -= 1
            if _users == 0:
                logging.getLogger().removeHandler(_handler)
                _handler.setLevel(logging.NOTSET)


def enter_run(log: RunLog) -> contextvars.Token[RunLog | None]:
    """Make ``log`` the current run's (in this context)."""
    return _current.set(log)


def leave_run(token: contextvars.Token[RunLog | None]) -> None:
    """Undo :func:`enter_run`."""
    _current.reset(token)
