"""The dashboard in a real browser (Debian's headless Chromium, driven by Playwright), served
by ``pgqueue dashboard`` with a real worker process on a real database: run a job by name
and watch it finish, retry a failed job from its page, pause a queue, read every page.

Skipped without chromium or playwright, unless PGQUEUE_REQUIRE_BROWSER is set (CI sets it).
A screenshot of every page goes to $PGQUEUE_ARTIFACTS (default tests/artifacts/).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from pgqueue import JobState, PgQueue
from tests.conftest import child_environ

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
USER, PASSWORD = "ops", "dashboard-test"
APP = "tests.acceptance.dashboard_app:pq"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.slow


def _missing() -> str | None:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        return "chromium is not installed (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright)"
    return None


@pytest.fixture(scope="module")
def browser_ready() -> None:
    reason = _missing()
    if reason is not None:
        if os.environ.get("PGQUEUE_REQUIRE_BROWSER"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def artifacts() -> Path:
    path = Path(os.environ.get("PGQUEUE_ARTIFACTS") or ROOT / "tests" / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "pgqueue", *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def served(
    browser_ready: None, dsn: str, schema: str, pq: PgQueue, tmp_path: Path
) -> Iterator[str]:
    """A worker process and ``pgqueue dashboard`` on the schema; the dashboard's URL."""
    env = child_environ()
    env.update(PGQUEUE_TEST_DSN=dsn, PGQUEUE_TEST_SCHEMA=schema)
    worker = _spawn(["worker", APP, "--poll-interval", "0.2"], env, tmp_path / "worker.log")
    port = _free_port()
    dashboard = _spawn(
        [
            *("dashboard", APP, "--port", str(port), "--counts-max-age", "0"),
            *("--basic-auth", f"{USER}:{PASSWORD}"),
        ],
        env,
        tmp_path / "dashboard.log",
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert dashboard.poll() is None, (tmp_path / "dashboard.log").read_text()
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()
        try:
            answer = httpx.get(url + "/api/queues", auth=(USER, PASSWORD), timeout=2)
        except httpx.TransportError:
            return False
        names = {q["name"] for q in answer.json()["queues"]}
        return answer.status_code == 200 and {"count_to", "flaky", "report"} <= names

    try:
        _wait_until(up, "the dashboard and the worker to start")
        yield url
    finally:
        _stop(dashboard)
        _stop(worker)


def _job_state(pq: PgQueue, job_id: int) -> JobState | None:
    job = pq.get_job_by_id(job_id)
    return None if job is None else job.state


def test_the_dashboard_in_a_browser(served: str, pq: PgQueue, artifacts: Path, schema: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(
            http_credentials={"username": USER, "password": PASSWORD},
            viewport={"width": 1400, "height": 900},
        )
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("dialog", lambda dialog: dialog.accept())

        def shot(name: str) -> None:
            page.screenshot(path=str(artifacts / f"dashboard-{name}.png"), full_page=True)

        # The catalogue: a bad run is refused field by field, a good one is followed live.
        page.goto(served + "/catalogue")
        expect(page.locator("#job-count_to h2")).to_have_text("count_to")
        expect(page.locator("#job-count_to")).to_contain_text("reporting progress")
        form = page.locator('form[data-run$="/count_to/run"]')
        form.locator("textarea").fill('{"to": "many"}')
        form.locator("button").click()
        expect(form.locator(".errors li")).to_contain_text("to: Input should be a valid integer")
        form.locator("textarea").fill("{not json")
        form.locator("button").click()
        expect(form.locator(".errors li")).to_contain_text("not JSON")
        shot("catalogue")
        form.locator("textarea").fill('{"to": 6, "pause": 0.4}')
        form.locator("button").click()
        page.wait_for_url(re.compile(r".*/jobs/\d+$"))
        run_id = int(page.url.rsplit("/", 1)[1])
        seen: list[str] = []
        deadline = time.monotonic() + 60
        while page.locator("#job-state").text_content() != "completed":
            assert time.monotonic() < deadline, "the run never completed"
            seen.append(page.locator("#job-progress").text_content() or "")
            page.wait_for_timeout(100)  # sampling the live page, not waiting for an event
        progress = [s for s in seen if '"done"' in s]
        assert progress and len(set(progress)) >= 2, seen  # it moved while we watched
        expect(page.locator("#job-progress")).to_contain_text('"done": 6')
        expect(page.locator("#job-output")).to_contain_text('"counted": 6')
        assert _job_state(pq, run_id) is JobState.completed
        shot("job-run")

        # A failed job, retried from its page, completes.
        flaky = int(pq.send("flaky", {"note": "retry me"}))  # type: ignore[arg-type]
        _wait_until(lambda: _job_state(pq, flaky) is JobState.failed, "the flaky job to fail")
        page.goto(f"{served}/jobs/{flaky}")
        expect(page.locator("#job-state")).to_have_text("failed")
        expect(page.locator("details.error")).to_contain_text("the first attempt fails")
        expect(page.locator("details.error pre")).to_contain_text("Traceback")
        shot("job-failed")
        page.get_by_role("button", name="Retry").click()
        expect(page.locator("#job-state")).to_have_text("completed", timeout=30_000)
        expect(page.locator("#job-output")).to_contain_text("succeeded on attempt 2")
        shot("job")

        # Bulk retry from the jobs page: every failed job the filters match.
        batch = [int(pq.send("flaky", {"batch": n})) for n in range(3)]  # type: ignore[arg-type]
        _wait_until(
            lambda: all(_job_state(pq, j) is JobState.failed for j in batch), "three failures"
        )
        page.goto(served + "/jobs?queue=flaky&state=failed")
        for job_id in batch:
            expect(page.locator("table.jobs")).to_contain_text(str(job_id))
        page.locator("#bulk-retry").click()
        expect(page.locator("#flash")).to_have_text("Retried 3 jobs.")
        _wait_until(
            lambda: all(_job_state(pq, j) is JobState.completed for j in batch),
            "the retried jobs to complete",
        )

        # What a job holds is shown as text: nothing in it runs.
        hostile = {"html": "<img src=x onerror=\"document.title='owned'\">"}
        hostile["script"] = "<script>document.title='owned'</script>"
        evil = int(pq.send("report", hostile, start_after=3600))  # type: ignore[arg-type]
        page.goto(f"{served}/jobs/{evil}")
        expect(page.locator("#job-data")).to_contain_text("<script>document.title")
        assert page.title() != "owned" and page.locator("#job-data img").count() == 0

        # The queues page: counts, the hour's chart, and pausing a queue.
        page.goto(served + "/")
        row = page.locator('tr[data-queue="report"]')
        expect(row.locator(".badge.paused")).to_have_count(0)
        expect(page.locator('tr[data-queue="count_to"] svg.chart rect.done')).to_have_count(12)
        expect(page.locator('tr[data-queue="count_to"]')).to_contain_text("1 done")
        shot("queues")
        row.get_by_role("button", name="Pause").click()
        expect(page.locator('tr[data-queue="report"] .badge.paused')).to_have_text("paused")
        assert [q.paused for q in pq.get_queues() if q.name == "report"] == [True]
        shot("queues-paused")
        resume = page.locator('tr[data-queue="report"]').get_by_role("button", name="Resume")
        expect(resume).to_be_visible()

        # The jobs list, filtered, and the other pages.
        page.goto(served + "/jobs?queue=flaky")
        expect(page.locator("table.jobs")).to_contain_text(str(flaky))
        shot("jobs")
        pq.schedule("report", "0 * * * *", {"hourly": True}, key="hourly")
        pq.subscribe("invoice.paid", "report")
        page.goto(served + "/schedules")
        expect(page.locator("table")).to_contain_text("0 * * * *")
        shot("schedules")
        page.goto(served + "/subscriptions")
        expect(page.locator("table")).to_contain_text("invoice.paid")
        shot("subscriptions")
        assert errors == []
        context.close()
        browser.close()
    for name in ("catalogue", "job", "job-failed", "queues", "jobs", "schedules"):
        assert (artifacts / f"dashboard-{name}.png").stat().st_size > 1000


def test_the_dashboard_refuses_a_browser_without_credentials(served: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context()
        for path in ("/", "/jobs", "/api/queues"):
            response = context.request.get(served + path)
            assert response.status == 401, path
            assert response.headers["www-authenticate"].startswith("Basic")
        refused = context.request.post(served + "/api/queues/report/pause")
        assert refused.status == 401
        context.close()
        browser.close()


def test_buttons_of_a_queue_named_like_a_path_act_on_that_queue(served: str, pq: PgQueue) -> None:
    """Chromium resolves "/api/queues/z/../ok/purge" to "/api/queues/ok/purge": the pages
    encode a queue's name as one path segment, so its buttons act on it alone."""
    from playwright.sync_api import expect, sync_playwright

    victim = int(pq.send("report", {"keep": "me"}, start_after=3600))  # type: ignore[arg-type]
    pq.cancel(victim)
    sneaky = f"q/../../jobs/{victim}"
    for name in ("ok", "z/../ok", sneaky):
        pq.create_queue(name)
    kept = pq.insert([{"name": "ok", "data": {"n": n}} for n in range(3)])
    pq.insert([{"name": "z/../ok", "data": {"n": n}} for n in range(2)])
    pq.pause_queue(sneaky)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(http_credentials={"username": USER, "password": PASSWORD})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("dialog", lambda dialog: dialog.accept())
        posted: list[str] = []
        page.on("request", lambda r: posted.append(r.url) if r.method == "POST" else None)

        page.goto(served + "/")
        row = page.locator('tr[data-queue="z/../ok"]')
        expect(row).to_contain_text("z/../ok")
        with page.expect_navigation():  # the page reloads once the action is done
            row.get_by_role("button", name="Purge").click()
        _wait_until(lambda: pq.find_jobs("z/../ok") == [], "queue z/../ok to be purged")
        assert [j.id for j in pq.find_jobs("ok")] == kept  # queue ok's jobs are untouched

        page.goto(served + "/")
        with page.expect_navigation():
            page.locator(f'tr[data-queue="{sneaky}"]').get_by_role("button", name="Resume").click()
        _wait_until(
            lambda: not {q.name: q.paused for q in pq.get_queues()}[sneaky],
            f"queue {sneaky} to resume",
        )
        assert _job_state(pq, victim) is JobState.cancelled  # not job {victim}'s Resume

        # Its jobs link filters by the whole name.
        page.goto(served + "/")
        page.locator('tr[data-queue="ok"] td a').first.click()
        page.wait_for_url(re.compile(r".*/jobs\?queue=ok$"))
        expect(page.locator("table.jobs tbody tr")).to_have_count(3)
        assert errors == []
        assert posted == [
            served + "/api/queues/z%2F..%2Fok/purge",
            served + f"/api/queues/q%2F..%2F..%2Fjobs%2F{victim}/resume",
        ]
        context.close()
        browser.close()
