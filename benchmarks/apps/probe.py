"""What every benchmark handler does: nothing, or note when it ran.

- ``BENCH_FIRST_FILE``: the first handler call writes the time (epoch seconds) there, so the
  runner can start a drain's clock at the first job rather than at process start.
- ``BENCH_LATENCY_FILE``: a handler given its job's send time ``t`` appends ``now - t``
  there, one line per job (W4). Drains send no ``t`` and pay one check per job.
"""

from __future__ import annotations

import os
import time
from typing import TextIO


class _Probe:
    def __init__(self) -> None:
        self.first_path = os.environ.get("BENCH_FIRST_FILE")
        self.latency_path = os.environ.get("BENCH_LATENCY_FILE")
        self.latency_file: TextIO | None = None

    def mark_first(self) -> None:
        now = time.time()
        assert self.first_path is not None
        with open(self.first_path + ".tmp", "w") as out:
            out.write(f"{now:.6f}\n")
        os.replace(self.first_path + ".tmp", self.first_path)  # the runner never sees half
        self.first_path = None

    def record(self, sent_at: float) -> None:
        latency = time.time() - sent_at
        if self.latency_file is None:
            assert self.latency_path is not None
            self.latency_file = open(self.latency_path, "a", buffering=1)  # noqa: SIM115
        self.latency_file.write(f"{latency:.6f}\n")


_probe = _Probe()


def started(sent_at: float | None) -> None:
    """Call first thing in a handler, with the job's ``t`` if it has one."""
    if _probe.first_path is not None:
        _probe.mark_first()
    if sent_at is not None and _probe.latency_path is not None:
        _probe.record(sent_at)


def enabled() -> bool:
    """True when latencies are recorded (handlers then decode what they need)."""
    return _probe.latency_path is not None


def app_name() -> str:
    """The application_name worker connections report (the runner looks for them)."""
    return os.environ.get("PGAPPNAME", "bench-worker")
