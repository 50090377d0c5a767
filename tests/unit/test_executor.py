"""The executor's parts without a database: expiry timers and the handler threads."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from pgqueue import JobState, RunningJob
from pgqueue._executor import Deadline, Threads


def running(job_id: int, expire_in: float) -> RunningJob:
    return RunningJob(id=job_id, name="q", data=None, state=JobState.active, expire_in=expire_in)


def poll_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


async def apoll_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def test_a_deadline_expires_only_the_jobs_still_running() -> None:
    loop = asyncio.get_running_loop()
    fast = [running(i, 0.05) for i in range(3)]
    slow = running(9, 3600)
    Deadline.arm([*fast, slow], loop)
    assert fast[0]._deadline is fast[1]._deadline is not slow._deadline  # one per expire_in
    Deadline.release(fast[0])  # ended in time
    await apoll_until(lambda: fast[1].cancelled and fast[2].cancelled)
    assert not fast[0].cancelled and not fast[0]._expired
    assert fast[1]._expired and fast[2]._expired
    assert not slow.cancelled


async def test_a_deadline_whose_jobs_all_ended_cancels_its_timer() -> None:
    jobs = [running(i, 3600) for i in range(2)]
    Deadline.arm(jobs, asyncio.get_running_loop())
    deadline = jobs[0]._deadline
    assert deadline is not None
    for job in jobs:
        Deadline.release(job)
        Deadline.release(job)  # twice is harmless
    assert deadline._timer.cancelled()
    assert all(job._deadline is None for job in jobs)


def test_a_thread_given_up_on_stops_counting_and_rejoins_when_it_returns() -> None:
    threads = Threads(size=1)
    stuck_release = threading.Event()
    stuck = threads.submit(lambda: stuck_release.wait(30))
    poll_until(stuck.running)
    waiting = threads.submit(lambda: "ran")
    assert not waiting.done()  # the only thread is taken
    threads.give_up(stuck)
    assert threads.stuck == 1
    assert waiting.result(10) == "ran"  # another thread took the stuck one's place
    stuck_release.set()
    assert stuck.result(10) is True
    poll_until(lambda: threads.stuck == 0)
    threads.shutdown()


@pytest.mark.parametrize("idle", [0, 1, 3])
def test_calls_submitted_together_run_together_up_to_the_size(idle: int) -> None:
    threads = Threads(size=6)
    for _ in range(idle):  # threads left idle by earlier calls
        threads.submit(lambda: None).result(10)
    if idle:
        poll_until(lambda: threads._idle >= 1)  # the earlier calls' thread waits for work
    # Six calls that each wait for all six: they finish only if they run at once.
    together = threading.Barrier(6, timeout=10)
    futures = [threads.submit(together.wait) for _ in range(6)]
    assert sorted(f.result(15) for f in futures) == list(range(6))
    threads.shutdown()


@pytest.mark.parametrize("raised", [SystemExit(3), KeyboardInterrupt(), ValueError("x")])
def test_what_a_handler_raises_reaches_its_future_and_the_thread_goes_on(
    raised: BaseException,
) -> None:
    threads = Threads(size=1)

    def fail() -> None:
        raise raised

    with pytest.raises(type(raised)):
        threads.submit(fail).result(10)
    assert threads.submit(lambda: 42).result(10) == 42
    threads.shutdown()
