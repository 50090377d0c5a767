"""What runs log: job.log() lines and captured logging records, stored with each attempt."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

import pgqueue
from pgqueue import AsyncPgQueue, JobState, PgQueue, RunningJob

from .test_worker import wait_until

app_log = logging.getLogger("tests.handler")


class Unprintable:
    def __str__(self) -> str:
        raise ValueError("no text")


def lines_of(entry: dict[str, Any]) -> list[tuple[str, str]]:
    return [(line["level"], line["message"]) for line in entry["lines"]]


async def test_job_log_lines_are_stored_with_each_attempt(dsn: str, schema: str) -> None:
    pq = AsyncPgQueue(dsn, schema=schema, maintenance=False)

    @pq.job("flaky", retry_limit=1, retry_delay=0)
    async def flaky(data: Any, job: RunningJob) -> str:
        job.log(f"attempt {job.attempt} begins")
        if job.attempt == 1:
            job.log("about to fail", level="WARNING")
            raise RuntimeError("first time")
        job.log({"rows": 3})  # any object, as its text
        job.log("nul \x00 and lone \ud800 surrogate")  # what PostgreSQL cannot store
        job.log(Unprintable())
        return "ok"

    @pq.job("quiet")
    async def quiet(data: Any) -> None:
        return None

    async with pq:
        job_id = await pq.send("flaky", {})
        silent = await pq.send("quiet", {})
        await pq.work(until_empty=True)
        job = await pq.get_job_by_id(job_id or 0)
        plain = await pq.get_job_by_id(silent or 0)
    assert job is not None and job.state is JobState.completed
    assert plain is not None and plain.logs is None
    first, second = job.logs or []
    assert (first["attempt"], first["dropped"]) == (1, 0)
    assert lines_of(first) == [("info", "attempt 1 begins"), ("warning", "about to fail")]
    assert second["attempt"] == 2
    assert lines_of(second) == [
        ("info", "attempt 2 begins"),
        ("info", "{'rows': 3}"),
        ("info", "nul \ufffd and lone \ufffd surrogate"),
        ("info", "<unprintable Unprintable: ValueError('no text')>"),
    ]
    assert all(line["at"].endswith("+00:00") for line in first["lines"])


async def test_logging_records_inside_handlers_are_captured_when_asked(
    dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Async and sync handlers run at once; each run's log holds its own records only, and
    # neither pgqueue's records nor those logged outside handlers join any.
    caplog.set_level(logging.DEBUG)
    pq = AsyncPgQueue(dsn, schema=schema, maintenance=False)
    both_running = threading.Barrier(2, timeout=10)

    @pq.job("async_job")
    async def async_job(data: str) -> None:
        app_log.info("async %s", data)
        await asyncio.to_thread(both_running.wait)
        app_log.debug("below the level")
        try:
            raise KeyError("k")
        except KeyError:
            app_log.exception("handled")

    @pq.job("sync_job")
    def sync_job(data: str, job: RunningJob) -> None:
        app_log.warning("sync %s", data)
        both_running.wait()
        job.log("by hand")

    async with pq:
        a = await pq.send("async_job", "a")
        s = await pq.send("sync_job", "s")
        app_log.info("outside any handler")
        await pq.work(until_empty=True, capture_logs="info")
        app_log.info("after the worker")
        ran_a, ran_s = await pq.get_job_by_id(a or 0), await pq.get_job_by_id(s or 0)
    assert ran_a is not None and ran_s is not None
    [entry_a], [entry_s] = ran_a.logs or [], ran_s.logs or []
    assert lines_of(entry_a)[0] == ("info", "async a")
    level, handled = lines_of(entry_a)[1]
    assert level == "error" and handled.startswith("handled\nTraceback")
    assert "KeyError: 'k'" in handled
    assert len(entry_a["lines"]) == 2
    assert lines_of(entry_s) == [("warning", "sync s"), ("info", "by hand")]
    # the capturing handler went with the worker
    assert not [h for h in logging.getLogger().handlers if type(h).__name__ == "_Capture"]


async def test_without_capture_only_job_log_lines_are_kept(dsn: str, schema: str) -> None:
    pq = AsyncPgQueue(dsn, schema=schema, maintenance=False)

    @pq.job("plain")
    async def plain(data: Any, job: RunningJob) -> None:
        app_log.warning("not captured")
        job.log("kept")

    async with pq:
        job_id = await pq.send("plain", {})
        await pq.work(until_empty=True)
        job = await pq.get_job_by_id(job_id or 0)
    assert job is not None and [lines_of(e) for e in job.logs or []] == [[("info", "kept")]]
    assert not [h for h in logging.getLogger().handlers if type(h).__name__ == "_Capture"]


async def test_logs_are_bounded_per_attempt_and_per_job(dsn: str, schema: str) -> None:
    pq = AsyncPgQueue(dsn, schema=schema, maintenance=False)

    @pq.job("chatty", retry_limit=11, retry_delay=0)
    async def chatty(data: Any, job: RunningJob) -> None:
        for n in range(250):
            job.log(f"line {n}")
        job.log("x" * 5000)
        if job.attempt < 12:
            raise RuntimeError("again")

    async with pq:
        job_id = await pq.send("chatty", {})
        await pq.work(until_empty=True)
        job = await pq.get_job_by_id(job_id or 0)
    assert job is not None and job.state is JobState.completed and job.logs is not None
    assert [e["attempt"] for e in job.logs] == list(range(3, 13))  # the last ten attempts
    last = job.logs[-1]
    assert len(last["lines"]) == 100 and last["dropped"] == 151
    assert last["lines"][0]["message"] == "line 151"
    cut = last["lines"][-1]["message"]  # its head and its tail
    assert len(cut) == 1000 and cut[300] == "…" and set(cut) == {"x", "…"}


async def test_snoozed_and_expired_runs_keep_their_logs(dsn: str, schema: str) -> None:
    pq = AsyncPgQueue(dsn, schema=schema, maintenance=False)

    @pq.job("sleepy", retry_limit=0)
    async def sleepy(data: Any, job: RunningJob) -> None:
        job.log(f"run {job.attempt}")
        if job.attempt == 1:
            job.snooze(0)
        await asyncio.sleep(60)  # runs past expire_in

    async with pq:
        job_id = await pq.send("sleepy", {}, expire_in=0.5)
        await pq.work(until_empty=True, poll_interval=0.05)
        job = await pq.get_job_by_id(job_id or 0)
    assert job is not None and job.state is JobState.expired
    assert [(e["attempt"], lines_of(e)) for e in job.logs or []] == [
        (1, [("info", "run 1")]),
        (2, [("info", "run 2")]),
    ]


async def test_archived_jobs_keep_their_logs(dsn: str, schema: str) -> None:
    pq = AsyncPgQueue(dsn, schema=schema, maintenance=False)

    @pq.job("archived")
    async def archived(data: Any, job: RunningJob) -> None:
        job.log("before archiving")

    async with pq:
        job_id = await pq.send("archived", {}, retention=1)
        await pq.work(until_empty=True)
        await pq.move_clock(3600)
        await pq.maintain()
        job = await pq.get_job_by_id(job_id or 0)
    assert job is not None and job.archived
    assert [lines_of(e) for e in job.logs or []] == [[("info", "before archiving")]]


def test_bad_levels_are_refused(pq: PgQueue) -> None:
    job = RunningJob(1, "q", None, JobState.active)
    with pytest.raises(pgqueue.InvalidOptionError, match="log level"):
        job.log("x", level="loud")
    assert job.take_logs() is None

    @pq.job("q")
    def q() -> None:
        pass

    for bad in ("loud", 0, 51, 3.5, "  "):
        with pytest.raises(pgqueue.InvalidOptionError, match=r"capture_logs|log level"):
            pq.work(capture_logs=bad)  # type: ignore[arg-type]


def test_the_cli_prints_a_jobs_logs(dsn: str, schema: str) -> None:
    pq = PgQueue(dsn, schema=schema, maintenance=False)

    @pq.job("printed", retry_limit=1, retry_delay=0)
    def printed(data: Any, job: RunningJob) -> None:
        job.log(f"try {job.attempt}", level="error" if job.attempt == 1 else "info")
        if job.attempt == 1:
            raise ValueError("once")

    with pq:
        job_id = pq.send("printed", {})
        pq.work(until_empty=True)
    command = ["job", str(job_id), "--logs", "--dsn", dsn, "--schema", schema]
    out = subprocess.run(
        [sys.executable, "-m", "pgqueue", *command],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out[0] == "-- attempt 1" and out[2] == "-- attempt 2"
    assert out[1].endswith(" ERROR    try 1") and out[3].endswith(" INFO     try 2")


def test_capture_changes_nothing_an_app_without_logging_set_up_prints(
    dsn: str, schema: str, tmp_path: Path
) -> None:
    # With no handler configured, Python prints warnings itself (its last resort): a run's
    # capture must not count as a handler, or the app's warnings and pgqueue's would vanish.
    script = tmp_path / "bare.py"
    script.write_text(
        textwrap.dedent(f"""
        import logging
        from pgqueue import PgQueue, RunningJob

        pq = PgQueue({dsn!r}, schema={schema!r}, maintenance=False)

        @pq.job("bare", retry_limit=0)
        def bare(data, job: RunningJob) -> None:
            logging.getLogger("app").warning("visible warning")
            raise RuntimeError("it broke")

        with pq:
            job_id = pq.send("bare", {{}})
            pq.work(until_empty=True, capture_logs=True)
            print(pq.get_job_by_id(job_id).logs[0]["lines"][0]["message"])
        """)
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout == "visible warning\n"
    assert "visible warning" in done.stderr
    assert "attempt 1 failed" in done.stderr and "RuntimeError: it broke" in done.stderr


async def test_each_worker_captures_at_its_own_level(dsn: str, schema: str) -> None:
    logging.getLogger("tests").setLevel(logging.DEBUG)
    try:
        strict = AsyncPgQueue(dsn, schema=schema, maintenance=False)
        chatty = AsyncPgQueue(dsn, schema=schema, maintenance=False)
        for pq, name in ((strict, "strict"), (chatty, "chatty")):

            @pq.job(name)
            async def handler(data: Any) -> None:
                app_log.debug("debug line")
                app_log.error("error line")

        async with strict, chatty:
            ids = [await strict.send("strict", {}) for _ in range(3)]
            ids += [await chatty.send("chatty", {}) for _ in range(3)]
            await asyncio.gather(
                strict.work(until_empty=True, capture_logs="error"),
                chatty.work(until_empty=True, capture_logs=logging.DEBUG),
            )
            jobs = [await strict.get_job_by_id(i or 0) for i in ids]
    finally:
        logging.getLogger("tests").setLevel(logging.NOTSET)
    seen = {(j.name, tuple(m for _, m in lines_of((j.logs or [])[0]))) for j in jobs if j}
    assert seen == {("strict", ("error line",)), ("chatty", ("debug line", "error line"))}
    assert logging.getLogRecordFactory() is logging.LogRecord  # put back with the workers


async def test_runs_cut_short_keep_their_logs(dsn: str, schema: str) -> None:
    pq = AsyncPgQueue(dsn, schema=schema, maintenance=False)
    started = asyncio.Event()

    @pq.job("waits", retry_limit=0)
    async def waits(data: str, job: RunningJob) -> None:
        job.log(f"{data} began")
        if data == "stubborn":
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                job.log("cancellation ignored")
                return  # swallowed: its run still expired
        started.set()
        await asyncio.sleep(60)

    async with pq:
        cancelled = await pq.send("waits", "cancelled")
        task = asyncio.create_task(pq.work(poll_interval=0.05, shutdown_timeout=0.1))
        await asyncio.wait_for(started.wait(), 15)
        await pq.cancel(cancelled or 0)
        started.clear()
        stopped = await pq.send("waits", "stopped")
        await asyncio.wait_for(started.wait(), 15)
        stubborn = await pq.send("waits", "stubborn", expire_in=0.3)

        async def expired() -> bool:
            job = await pq.get_job_by_id(stubborn or 0)
            return job is not None and job.state is JobState.expired

        await wait_until(expired)
        pq.stop_working()
        await asyncio.wait_for(task, 30)
        found = {i: await pq.get_job_by_id(i or 0) for i in (cancelled, stopped, stubborn)}
    states = {i: (j.state, [lines_of(e) for e in j.logs or []]) for i, j in found.items() if j}
    assert states == {
        cancelled: (JobState.cancelled, [[("info", "cancelled began")]]),
        stopped: (JobState.retry, [[("info", "stopped began")]]),  # handed back
        stubborn: (
            JobState.expired,
            [[("info", "stubborn began"), ("info", "cancellation ignored")]],
        ),
    }


async def test_odd_levels_records_and_long_lines(
    dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    pq = AsyncPgQueue(dsn, schema=schema, maintenance=False)

    @pq.job("odd")
    async def odd(data: Any, job: RunningJob) -> None:
        job.log("by number", level=logging.WARNING)
        job.log("by old name", level="WARN")
        logging.getLogger("app").log(25, "custom level")
        logging.getLogger("pgqueue_billing").info("not pgqueue's own")
        logging.getLogger("pgqueue.worker").info("pgqueue's own")
        logging.getLogger("app").info("with stack", stack_info=True)
        try:
            raise KeyError("the-real-cause")
        except KeyError:
            logging.getLogger("app").exception("deep " + "x" * 2000)

    async with pq:
        job_id = await pq.send("odd", {})
        await pq.work(until_empty=True, capture_logs="debug")
        job = await pq.get_job_by_id(job_id or 0)
    assert job is not None and job.logs is not None
    lines = lines_of(job.logs[0])
    assert lines[:4] == [
        ("warning", "by number"),
        ("warning", "by old name"),
        ("info", "custom level"),
        ("info", "not pgqueue's own"),
    ]
    assert lines[4][1].startswith("with stack\nStack (most recent call last):")
    level, deep = lines[5]
    assert level == "error" and len(deep) == 1000
    assert deep.startswith("deep xxx") and deep.endswith("KeyError: 'the-real-cause'")
    assert len(lines) == 6
