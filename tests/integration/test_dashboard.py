"""The dashboard on a real database: every page and API route, the actions, running a
job by name, bulk retry, paging, mounting."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import psycopg
import pytest
from psycopg import sql
from starlette.applications import Starlette
from starlette.routing import Mount

import pgqueue
from pgqueue.dashboard import _service as service
from pgqueue.dashboard._counts import QueueCounts

from .dashboard_world import client as _client
from .dashboard_world import csrf as _csrf
from .dashboard_world import make_app as _app
from .dashboard_world import state as _state
from .test_worker import wait_until


async def test_every_page_renders_and_escapes_what_jobs_hold(world: dict[str, Any]) -> None:
    async with _client(_app(world)) as client:
        pages = {
            "/": ["orders", "events", "concurrency 3", "rate 10 / 60.0 s", "Pause", "Purge"],
            "/jobs": [f'href="/jobs/{world["failed"]}"', "Next page"][:1],
            "/jobs?queue=orders&state=failed": [str(world["failed"])],
            f"/jobs/{world['failed']}": ["RuntimeError", "no stock", "Retry", "Children"],
            f"/jobs/{world['child']}": ["Parents", f'href="/jobs/{world["failed"]}"'],
            f"/jobs/{world['waiting']}": ["Cancel", "k1"],
            "/catalogue": ["orders", "Ships an order.", "Order", "retry_limit=0", "Run orders"],
            "/schedules": ["*/5 * * * *", "five", "UTC"],
            "/subscriptions": ["order.placed", "events"],
        }
        for url, expected in pages.items():
            page = await client.get(url)
            assert page.status_code == 200, url
            for text in expected:
                assert text in page.text, (url, text)
            assert "<script>alert" not in page.text and "<img src=x" not in page.text, url
            assert "<b>bold</b>" not in page.text, url
            assert "default-src 'self'" in page.headers["content-security-policy"]
        shown = (await client.get(f"/jobs/{world['waiting']}")).text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown
        failed = (await client.get(f"/jobs/{world['failed']}")).text
        assert "&lt;b&gt;bold&lt;/b&gt; line" in failed
        for url in ("/jobs/abc", "/jobs/0", "/jobs/99999999", "/jobs?limit=100000"):
            page = await client.get(url)
            assert page.status_code in (400, 404), url
        assert (await client.get("/static/dashboard.js")).status_code == 200


async def test_the_api_reads_queues_jobs_catalogue_schedules_subscriptions(
    world: dict[str, Any],
) -> None:
    async with _client(_app(world)) as client:
        queues = (await client.get("/api/queues")).json()["queues"]
        by_name = {q["name"]: q for q in queues}
        assert by_name["orders"]["counts"]["failed"] == 1
        assert by_name["orders"]["last_hour"]["failed"] == 1
        assert by_name["orders"]["last_hour"]["failure_rate"] == 1.0
        assert by_name["plain"]["last_hour"]["completed"] == 1
        assert len(by_name["plain"]["last_hour"]["series"]) == 12
        assert by_name["events"]["limits"]["concurrency"] == 3
        one = (await client.get("/api/queues/plain")).json()
        assert one["counts"]["created"] >= 1 and one["oldest_waiting_seconds"] is not None
        assert (await client.get("/api/queues/nope")).status_code == 404
        jobs = (await client.get("/api/jobs", params={"queue": "plain", "key": "k1"})).json()
        assert [j["id"] for j in jobs["jobs"]] == [world["waiting"]]
        by_data = await client.get("/api/jobs", params={"data": '{"step": 2}'})
        assert [j["id"] for j in by_data.json()["jobs"]] == [world["child"]]
        by_group = await client.get("/api/jobs", params={"group": "g1"})
        assert [j["id"] for j in by_group.json()["jobs"]] == [world["done"]]
        job = (await client.get(f"/api/jobs/{world['failed']}")).json()
        assert job["state"] == "failed" and job["errors"][0]["error"]["type"] == "RuntimeError"
        assert job["children"] == [world["child"]] and job["logs"][0]["attempt"] == 1
        catalogue = (await client.get("/api/catalogue")).json()["jobs"]
        assert [c["name"] for c in catalogue] == ["orders", "plain"]
        assert catalogue[0]["schema"]["required"] == ["order_id", "email"]
        schedules = (await client.get("/api/schedules")).json()["schedules"]
        assert schedules[0]["key"] == "five" and len(schedules[0]["next_slots"]) == 3
        subs = (await client.get("/api/subscriptions")).json()["subscriptions"]
        assert subs == [{"event": "order.placed", "queue": "events"}]


async def test_job_and_queue_actions(world: dict[str, Any]) -> None:
    pq = world["pq"]
    async with _client(_app(world)) as client:
        h = await _csrf(client)
        retried = await client.post(f"/api/jobs/{world['failed']}/retry", headers=h)
        assert retried.status_code == 200
        assert (await pq.get_job_by_id(world["failed"])).state.value == "retry"
        again = await client.post(f"/api/jobs/{world['failed']}/resume", headers=h)
        assert again.status_code == 409
        assert (await client.post(f"/api/jobs/{world['waiting']}/cancel", headers=h)).is_success
        assert (await client.post(f"/api/jobs/{world['waiting']}/resume", headers=h)).is_success
        assert (
            await client.post(f"/api/jobs/{world['waiting']}/explode", headers=h)
        ).status_code == 404
        assert (await client.delete(f"/api/jobs/{world['done']}", headers=h)).is_success
        assert await pq.get_job_by_id(world["done"]) is None
        assert (await client.post("/api/queues/plain/pause", headers=h)).is_success
        assert [q.paused for q in await pq.get_queues() if q.name == "plain"] == [True]
        assert "paused" in (await client.get("/")).text
        assert (await client.post("/api/queues/plain/resume", headers=h)).is_success
        purged = await client.post("/api/queues/plain/purge", headers=h)
        assert purged.json()["deleted"] >= 1
        assert (await client.post("/api/queues/nope/pause", headers=h)).status_code == 404
        assert (await client.post("/api/queues/nope/purge", headers=h)).status_code == 404


async def test_counts_are_reused_for_a_while_and_taken_again_after_an_action(
    world: dict[str, Any],
) -> None:
    pq = world["pq"]
    async with _client(_app(world, counts_max_age=3600)) as client:
        h = await _csrf(client)
        before = (await client.get("/api/queues/plain")).json()["counts"]["created"]
        await pq.send("plain", {"more": 1})
        cached = (await client.get("/api/queues/plain")).json()
        assert cached["counts"]["created"] == before and cached["counted_seconds_ago"] >= 0
        assert (await client.post("/api/queues/plain/pause", headers=h)).is_success
        after = (await client.get("/api/queues/plain")).json()["counts"]["created"]
        assert after == before + 1


async def test_a_job_whose_records_lack_fields_still_renders(
    world: dict[str, Any], conn: psycopg.Connection[Any], schema: str
) -> None:
    conn.execute(
        sql.SQL("UPDATE {}.job SET logs = %s::jsonb, errors = %s::jsonb WHERE id = %s").format(
            sql.Identifier(schema)
        ),
        ('[{"lines": [{"message": "no level"}]}]', '[{"error": "just text"}]', world["waiting"]),
    )
    async with _client(_app(world)) as client:
        page = await client.get(f"/jobs/{world['waiting']}")
        assert page.status_code == 200 and "no level" in page.text and "just text" in page.text


async def test_run_by_name_validates_against_the_model(world: dict[str, Any]) -> None:
    pq = world["pq"]
    async with _client(_app(world)) as client:
        h = await _csrf(client)
        before = await _state(pq)
        bad = await client.post(
            "/api/catalogue/orders/run", headers=h, json={"data": {"order_id": "x"}}
        )
        assert bad.status_code == 422
        fields = {tuple(d["loc"]) for d in bad.json()["details"]}
        assert fields == {("order_id",), ("email",)}
        for body, status in (
            (b"{not json", 400),
            (b'{"data": 1, "extra": 2}', 400),
            (b"[1]", 400),
        ):
            sent = await client.post(
                "/api/catalogue/orders/run",
                headers={**h, "content-type": "application/json"},
                content=body,
            )
            assert sent.status_code == status, body
        unknown = await client.post("/api/catalogue/nope/run", headers=h, json={"data": None})
        assert unknown.status_code == 404
        assert await _state(pq) == before
        good = await client.post(
            "/api/catalogue/orders/run",
            headers=h,
            json={"data": {"order_id": 7, "email": "b@example.com"}},
        )
        assert good.status_code == 200 and good.json()["url"] == f"/jobs/{good.json()['id']}"
        job = await pq.get_job_by_id(good.json()["id"])
        assert job.data == {"order_id": 7, "email": "b@example.com"}


async def test_bulk_retry_retries_the_filtered_failed_jobs_in_batches(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    pq = world["pq"]
    await pq.insert([{"name": "plain", "data": {"batch": i % 2}} for i in range(9)])
    for job in await pq.fetch("plain", 20):
        await pq.fail(job, "broken", retry=False)
    monkeypatch.setattr(service, "BULK_BATCH", 2)
    monkeypatch.setattr(service, "BULK_MOST", 3)
    async with _client(_app(world)) as client:
        h = await _csrf(client)
        body: dict[str, Any] = {"queue": "plain", "data": '{"batch": 1}'}
        first = (await client.post("/api/jobs/retry", headers=h, json=body)).json()
        assert first["retried"] == 4 and first["next_after"] is not None
        rest = await client.post(
            "/api/jobs/retry", headers=h, json={**body, "after": first["next_after"]}
        )
        assert rest.json() == {"retried": 0, "next_after": None}
        failed = await pq.find_jobs("plain", state="failed", limit=100)
        assert {j.data.get("batch") for j in failed} == {0, None} and len(failed) >= 5
        bad = await client.post("/api/jobs/retry", headers=h, json={"data": "[1]"})
        assert bad.status_code == 400
    monkeypatch.undo()  # the batch and bound as shipped
    async with _client(_app(world)) as client:
        h = await _csrf(client)
        everything = await client.post("/api/jobs/retry", headers=h, json={"limit": 5})
        assert everything.json() == {"retried": len(failed) + 1, "next_after": None}
        assert await pq.find_jobs(state="failed") == []


async def test_job_lists_page_by_id(world: dict[str, Any]) -> None:
    pq = world["pq"]
    ids = await pq.insert([{"name": "plain", "data": {"n": i}} for i in range(25)])
    async with _client(_app(world)) as client:
        seen: list[int] = []
        after = None
        while True:
            params: dict[str, Any] = {"queue": "plain", "state": "created", "limit": 10}
            if after is not None:
                params["after"] = after
            page = (await client.get("/api/jobs", params=params)).json()
            seen += [j["id"] for j in page["jobs"]]
            after = page["next_after"]
            if after is None:
                break
        expected = await pq.find_jobs("plain", state="created", limit=1000)
        assert seen == [j.id for j in expected] and set(ids) <= set(seen)
        html = (await client.get("/jobs", params={"queue": "plain", "limit": 10})).text
        match = re.search(r'id="next-page" href="\?([^"]+)"', html)
        assert match is not None and "after=" in match[1]
        second = await client.get("/jobs?" + match[1].replace("&amp;", "&"))
        assert second.status_code == 200 and "First page" in second.text


async def test_the_app_is_served_under_a_mount_path(world: dict[str, Any]) -> None:
    outer = Starlette(routes=[Mount("/admin/queues", app=_app(world))])
    async with _client(outer) as client:
        page = await client.get("/admin/queues/")
        assert page.status_code == 200
        assert 'href="/admin/queues/jobs"' in page.text
        assert "/admin/queues/static/dashboard.css" in page.text
        assert 'data-action="/admin/queues/api/queues/orders/pause"' in page.text
        token = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
        assert token is not None
        paused = await client.post(
            "/admin/queues/api/queues/orders/pause", headers={"x-csrf-token": token[1]}
        )
        assert paused.status_code == 200


async def test_throughput_takes_a_sane_window(world: dict[str, Any]) -> None:
    pq = world["pq"]
    rates = await pq.get_queue_throughput("orders", window=60.0, buckets=3)
    assert rates == {"orders": [(0, 0), (0, 0), (0, 1)]}
    assert await pq.get_queue_throughput("events") == {}
    for window, buckets in ((0.0, 12), (float("nan"), 12), (3600.0, 0), (3600.0, 1001)):
        with pytest.raises(pgqueue.InvalidInputError):
            await pq.get_queue_throughput(window=window, buckets=buckets)
    with pytest.raises(pgqueue.InvalidNameError):
        await pq.get_queue_throughput("bad name!")


async def test_an_archived_job_offers_only_delete(world: dict[str, Any]) -> None:
    pq = world["pq"]
    await pq.move_clock(30 * 86400)  # past every retention: maintenance archives it
    await pq.maintain()
    job = await pq.get_job_by_id(world["failed"])
    assert job is not None and job.archived
    async with _client(_app(world)) as client:
        page = (await client.get(f"/jobs/{world['failed']}")).text
        assert "it can only be deleted" in page and ">Retry<" not in page and ">Delete<" in page
        h = await _csrf(client)
        assert (
            await client.post(f"/api/jobs/{world['failed']}/retry", headers=h)
        ).status_code == 409
        assert (await client.delete(f"/api/jobs/{world['failed']}", headers=h)).is_success
        assert await pq.get_job_by_id(world["failed"]) is None


async def test_an_old_count_is_served_while_a_new_one_is_taken(world: dict[str, Any]) -> None:
    counts = QueueCounts(world["pq"], max_age=1.0)
    taken = await counts.get()
    # As if taken two seconds ago: past max_age, within twelve times it.
    first = counts._latest = dataclasses.replace(taken, taken=taken.taken - 2.0)
    assert await counts.get() is first  # stale: served, and a new count begins
    taking = counts._taking
    assert taking is not None
    newer = await taking
    assert newer.taken > first.taken and await counts.get() is newer
    counts._latest = dataclasses.replace(newer, taken=newer.taken - 20.0)  # far too old
    waited = await counts.get()
    assert waited.age < 1.0


async def test_a_count_begun_before_an_action_is_not_kept(world: dict[str, Any]) -> None:
    counts = QueueCounts(world["pq"], max_age=3600)
    first = await counts.get()
    in_flight = counts._start()
    counts.forget()  # an action ends while that count is under way
    await in_flight
    again = await counts.get()
    assert again is not first and again is not in_flight.result()


def _metrics_connections(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE application_name = 'pgqueue-metrics' AND datname = current_database()"
    ).fetchone()
    assert row is not None
    return int(row[0])


async def test_the_dashboard_serves_metrics_behind_its_auth(
    world: dict[str, Any], conn: psycopg.Connection[Any]
) -> None:
    app = _app(world, metrics=True)
    async with app.router.lifespan_context(app):  # as a server runs it
        async with _client(app, auth=None) as anonymous:
            assert (await anonymous.get("/metrics/")).status_code == 401
        async with _client(app) as client:
            scraped = await client.get("/metrics/")
            assert scraped.status_code == 200
            depth = re.search(
                r'pgqueue_queue_jobs\{queue="orders",state="failed"\} (\S+)', scraped.text
            )
            assert depth is not None and float(depth.group(1)) >= 1
        assert _metrics_connections(conn) == 1  # the depth gauges' connection

    # The app's shutdown closed it: its server process leaves pg_stat_activity a moment after
    # (later on a loaded machine), so look until a deadline.
    async def closed() -> bool:
        return _metrics_connections(conn) == 0

    await wait_until(closed)
    async with _client(_app(world)) as client:  # not asked for: not served
        assert (await client.get("/metrics/")).status_code == 404


async def test_a_replica_that_cannot_be_reached_fails_reads_not_actions(
    world: dict[str, Any],
) -> None:
    with pytest.raises(TypeError, match="read_dsn"):
        _app(world, read_dsn=5432)
    app = _app(world, read_dsn="postgresql://postgres@127.0.0.1:1/nowhere?connect_timeout=1")
    async with app.router.lifespan_context(app), _client(app) as client:
        queues = await client.get("/api/queues")
        assert queues.status_code == 500
        assert "cannot connect" in queues.json()["error"]
        page = await client.get("/catalogue")  # reads nothing: it sets the CSRF cookie
        match = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
        assert page.status_code == 200 and match is not None
        headers = {"x-csrf-token": match[1]}
        done = await client.post(f"/api/jobs/{world['failed']}/retry", headers=headers)
        assert done.status_code == 200, done.text
    job = await world["pq"].get_job_by_id(world["failed"])
    assert job is not None and job.state == pgqueue.JobState.retry
