"""Worker processes started with a library's own command line, and stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import psutil  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = ROOT / "benchmarks" / "results" / "logs"


class WorkerError(RuntimeError):
    """A worker process died, or did not come up."""


class WorkerProcess:
    """One worker subprocess; its output goes to a log file under ``results/logs``."""

    def __init__(
        self, argv: list[str], dsn: str, app_name: str, env: Mapping[str, str] | None = None
    ) -> None:
        self.argv = argv
        self.app_name = app_name
        self._env = {
            **os.environ,
            "BENCH_DSN": dsn,
            "PGAPPNAME": app_name,
            "PYTHONPATH": str(ROOT),
            **(env or {}),
        }
        self._popen: subprocess.Popen[bytes] | None = None
        stem = f"{app_name}-{os.getpid()}-{time.monotonic_ns()}"
        self.log_path = LOG_DIR / f"{stem}.log"
        self.first_path = LOG_DIR / f"{stem}.first"
        self._env["BENCH_FIRST_FILE"] = str(self.first_path)

    @property
    def pid(self) -> int:
        """The process id (once started)."""
        assert self._popen is not None
        return self._popen.pid

    def start(self) -> None:
        """Start the process."""
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self._popen = subprocess.Popen(
                self.argv, cwd=ROOT, env=self._env, stdout=log, stderr=subprocess.STDOUT
            )

    def check_alive(self) -> None:
        """Raise WorkerError (with the log's tail) if the process has exited."""
        if self._popen is not None and self._popen.poll() is not None:
            raise WorkerError(
                f"worker {' '.join(self.argv)} exited with {self._popen.returncode}:\n"
                + self.log_tail()
            )

    def first_job_at(self) -> float | None:
        """When (epoch seconds) this worker's first handler call began, once it has."""
        try:
            text = self.first_path.read_text().strip()
        except OSError:
            return None
        return float(text) if text else None

    def log_tail(self, lines: int = 20) -> str:
        """The end of the process's output."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def rss(self) -> int:
        """Resident set size in bytes (0 once the process is gone)."""
        try:
            return int(psutil.Process(self.pid).memory_info().rss)
        except psutil.Error:
            return 0

    async def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, wait for a graceful exit, SIGKILL after ``timeout``."""
        popen = self._popen
        if popen is None or popen.poll() is not None:
            return
        popen.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(popen.wait, timeout)
        except subprocess.TimeoutExpired:
            popen.kill()
            await asyncio.to_thread(popen.wait)
        self.first_path.unlink(missing_ok=True)

    async def __aenter__(self) -> WorkerProcess:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class WorkerGroup:
    """Several worker processes of one configuration, started and stopped together."""

    def __init__(
        self, argv: list[str], dsn: str, count: int, env: Mapping[str, str] | None = None
    ) -> None:
        self.workers = [WorkerProcess(argv, dsn, f"bench-worker-{i}", env) for i in range(count)]

    def check_alive(self) -> None:
        """Raise if any worker has exited."""
        for worker in self.workers:
            worker.check_alive()

    def first_job_at(self) -> float | None:
        """When the first handler call of any worker began (epoch seconds), if one has."""
        times = [t for w in self.workers if (t := w.first_job_at()) is not None]
        return min(times) if times else None

    def rss(self) -> int:
        """The workers' resident set sizes, summed (bytes)."""
        return sum(w.rss() for w in self.workers)

    async def __aenter__(self) -> WorkerGroup:
        for worker in self.workers:
            worker.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(ProcessLookupError):
            await asyncio.gather(*(w.stop() for w in self.workers))
