"""How the ``pgqueue`` command writes its logs: plain lines, or one JSON object per line."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

__all__ = ["JOB_FIELDS", "JsonFormatter", "configure"]

# The attributes a job's log lines carry (see Executor.run), kept by the JSON format.
JOB_FIELDS = ("queue", "job_id", "attempt", "duration")

PLAIN = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (ISO 8601, UTC), level, logger, message, the job
    fields it carries, and the traceback of an exception it was logged with."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in JOB_FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str, form: str, capture: str | None = None) -> None:
    """Send the process's logs to standard error at ``level``, as ``form`` (plain, json).
    With ``capture`` (a worker's --capture-logs level) below ``level``, records from
    ``capture`` up are still made (for runs' logs), but only ``level`` and up printed."""
    printed = logging.getLevelName(level.upper())
    made = printed
    if capture is not None and isinstance(logging.getLevelName(capture.upper()), int):
        made = min(printed, logging.getLevelName(capture.upper()))
    handler = logging.StreamHandler()
    handler.setLevel(printed)
    handler.setFormatter(JsonFormatter() if form == "json" else logging.Formatter(PLAIN))
    logging.basicConfig(level=made, handlers=[handler], force=True)
