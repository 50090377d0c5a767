"""A worker's heartbeats: every run it holds beats, progress is stored as it comes, and a
run the database no longer counts as holding its job is stopped."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ._completer import write_apart
from ._core import Core
from ._db import Plan
from ._executor import RunningJob
from .errors import PgQueueError

__all__ = ["Heartbeat"]

log = logging.getLogger("pgqueue.worker")


class Heartbeat:
    """Beats for the runs in ``active`` (the worker's own map, read as it changes) at a
    third of each one's heartbeat, else of ``default``; ``cancel`` stops a run whose job
    was cancelled. Set ``wake`` to store reported progress now."""

    def __init__(
        self,
        run: Callable[[Plan[Any]], Awaitable[Any]],
        core: Core,
        active: dict[int, RunningJob],
        default: float,
        cancel: Callable[[RunningJob], None],
    ) -> None:
        self._run = run
        self._core = core
        self._active = active
        self._default = default
        self._cancel = cancel
        self.wake = asyncio.Event()
        self.every = default / 3  # what the loop now waits between beats
        # Seconds between looks for cancelled runs when notifications do not announce them
        # (None: at each beat only, as a backstop).
        self.check_every: float | None = None

    def arrived(self, job: RunningJob) -> None:
        """A run started: beat sooner if its heartbeat is shorter than the loop plans for,
        and plan the looks for cancellations when notifications do not announce them."""
        if self.check_every is not None or (
            job.heartbeat_seconds and job.heartbeat_seconds / 3 < self.every
        ):
            self.wake.set()

    async def run(self) -> None:
        """Beat for every run at a third of its heartbeat (the job's, else the worker's),
        store reported progress as it comes, and stop runs the database no longer counts
        as holding their job."""
        loop = asyncio.get_running_loop()
        last_beat = loop.time()
        last_check = last_beat
        retry = 0.1  # after a failed write: soon, a lapsing heartbeat cannot wait a round
        failed = False
        while True:
            beats = [j.heartbeat_seconds or self._default for j in self._active.values()]
            interval = self.every = max(min(beats, default=self._default) / 3, 0.1)
            if failed:  # write again now what the failed write carried
                failed = False
            else:
                try:
                    until = last_beat + interval
                    if self.check_every is not None and self._active:
                        until = min(until, last_check + self.check_every)
                    await asyncio.wait_for(self.wake.wait(), max(until - loop.time(), 0))
                    await asyncio.sleep(0.05)  # let a burst of progress reports coalesce
                except asyncio.TimeoutError:
                    pass
                self.wake.clear()
            beat = loop.time() >= last_beat + interval
            owed = last_beat
            if beat:
                last_beat = loop.time()
            runs: list[RunningJob] = []
            progress: list[str | None] = []
            for job in list(self._active.values()):
                reported = job.take_progress()
                if reported is not None or beat:
                    runs.append(job)
                    progress.append(reported)
            check = bool(runs) or (
                self.check_every is not None
                and bool(self._active)
                and loop.time() >= last_check + self.check_every
            )
            if not check:
                continue
            try:
                held = (
                    await write_apart(
                        self._touch,
                        list(zip(runs, progress, strict=True)),
                        self._touch_refused,
                    )
                    if runs
                    else []
                )
                last_check = loop.time()
                cancelled = await self._run(self._core.cancelled_among(list(self._active)))
            except PgQueueError as exc:
                log.warning("heartbeat failed (%s); trying again in %.1fs", exc, retry)
                for job, reported in zip(runs, progress, strict=True):
                    if reported is not None:
                        job.restore_progress(reported)
                last_beat = owed  # the beat is still owed
                await asyncio.sleep(retry)
                retry = min(retry * 2, interval)
                failed = True
                continue
            retry = 0.1
            for job_id, run_id in cancelled:
                running = self._active.get(job_id)
                if running is not None and running.run_id == run_id and not running.cancelled:
                    self._cancel(running)
            kept = set(held)
            for job in runs:  # runs the database no longer counts as holding their job
                if job.id not in kept and self._active.get(job.id) is job and not job.cancelled:
                    log.warning(
                        "job %s (%s): attempt %d no longer holds the job (it expired "
                        "or was taken back); stopping it",
                        job.id,
                        job.name,
                        job.attempt,
                    )
                    job.interrupt()

    async def _touch(self, beats: list[tuple[RunningJob, str | None]]) -> list[int]:
        held: list[int] = await self._run(
            self._core.touch(
                [job.id for job, _ in beats],
                [job.run_id for job, _ in beats],
                [progress for _, progress in beats],
            )
        )
        return held

    async def _touch_refused(
        self, beat: tuple[RunningJob, str | None], error: PgQueueError
    ) -> list[int]:
        job = beat[0]
        log.error(
            "job %s (%s): the database refused its heartbeat (%s); the other runs beat as ever",
            job.id,
            job.name,
            error,
        )
        return [job.id]  # not a sign that the run lost its job
