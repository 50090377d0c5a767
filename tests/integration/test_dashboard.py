"""The dashboard on a real database: every page and API route, what each refuses
(unauthenticated, read-only, cross-site, bad input) and that a refusal writes nothing."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route

import pgqueue
from pgqueue.dashboard import BasicAuth, TokenAuth, create_app
from pgqueue.dashboard import _service as service

CREDENTIALS = ("admin", "s3cret")
BASE = "http://dash.test"


class Order(BaseModel):
    order_id: int
    email: str


def _register(pq: pgqueue.AsyncPgQueue) -> None:
    @pq.job("orders", description="Ships an order.", retry_limit=0)
    async def ship(data: Order) -> dict[str, int]:
        return {"shipped": data.order_id}

    @pq.job("plain")
    async def plain(data: Any) -> None:
        return None


@pytest.fixture
async def world(
    dsn: str, schema: str, conn: psycopg.Connection[Any]
) -> AsyncIterator[dict[str, Any]]:
    """A queue object with registered jobs, and one job in most states."""
    async with pgqueue.AsyncPgQueue(dsn, schema=schema, maintenance=False) as pq:
        _register(pq)
        await pq.create_queue("events", concurrency=3, rate_limit=(10, 60.0))
        first = await pq.send("orders", {"order_id": 1, "email": "a@example.com"})
        fetched = await pq.fetch("orders")
        await pq.fail(fetched, RuntimeError("no stock <img src=x onerror=alert(1)>"), retry=False)
        done = await pq.send("plain", {"x": 1}, group="g1")
        (claimed,) = await pq.fetch("plain", 1)
        await pq.complete(claimed, {"ok": True})
        waiting = await pq.send(
            "plain", {"tenant": "<script>alert(1)</script>"}, singleton_key="k1"
        )
        child = await pq.send("plain", {"step": 2}, depends_on=[int(first)])  # type: ignore[arg-type]
        await pq.schedule("plain", "*/5 * * * *", {"from": "cron"}, key="five")
        await pq.subscribe("order.placed", "events")
        conn.execute(
            sql.SQL("UPDATE {}.job SET logs = %s::jsonb WHERE id = %s").format(
                sql.Identifier(schema)
            ),
            (
                '[{"attempt": 1, "dropped": 0, "lines": [{"at": "2026-01-01T00:00:00Z", '
                '"level": "INFO", "message": "<b>bold</b> line"}]}]',
                int(first),  # type: ignore[arg-type]
            ),
        )
        yield {
            "pq": pq,
            "failed": int(first),  # type: ignore[arg-type]
            "waiting": int(waiting),  # type: ignore[arg-type]
            "child": int(child),  # type: ignore[arg-type]
            "done": int(done),  # type: ignore[arg-type]
            "completed": claimed.id,
        }


def _client(app: Starlette, auth: tuple[str, str] | None = CREDENTIALS) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE, auth=auth)


async def _csrf(client: httpx.AsyncClient) -> dict[str, str]:
    """Open a page (which sets the CSRF cookie) and return the header actions send."""
    page = await client.get("/")
    assert page.status_code == 200
    match = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert match is not None and client.cookies.get("pgqueue_csrf") == match[1]
    return {"x-csrf-token": match[1]}


async def _state(pq: pgqueue.AsyncPgQueue) -> tuple[Any, ...]:
    """Everything an action could change: every job, every queue."""
    jobs = await pq.find_jobs(limit=10_000, archived=True)
    queues = await pq.get_queues()
    return (
        [(j.id, j.state, j.attempt, j.retry_count) for j in jobs],
        [(q.name, q.paused) for q in queues],
    )


def _app(world: dict[str, Any], **options: Any) -> Starlette:
    options.setdefault("auth", BasicAuth(*CREDENTIALS))
    options.setdefault("counts_max_age", 0)
    return create_app(world["pq"], **options)


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


@pytest.mark.parametrize(
    "query",
    [
        {"limit": "100000"},
        {"limit": "0"},
        {"limit": "x"},
        {"after": "-1"},
        {"after": "9" * 30},
        {"state": "exploded"},
        {"data": "{not json"},
        {"data": "[1, 2]"},
        {"key": "k" * 300},
    ],
)
async def test_bad_filters_get_a_400(world: dict[str, Any], query: dict[str, str]) -> None:
    async with _client(_app(world)) as client:
        response = await client.get("/api/jobs", params=query)
        assert response.status_code == 400 and response.json()["error"]


async def test_bad_job_ids_get_a_4xx(world: dict[str, Any]) -> None:
    async with _client(_app(world)) as client:
        headers = await _csrf(client)
        for job_id in ("abc", "0", "-5", "1e3", "9" * 40, "9" * 5000, "1_0", "%201", "99999999"):
            assert (await client.get(f"/api/jobs/{job_id}")).status_code in (400, 404)
            before = await _state(world["pq"])
            posted = await client.post(f"/api/jobs/{job_id}/retry", headers=headers)
            assert posted.status_code in (400, 404), job_id
            assert await _state(world["pq"]) == before


def _action_routes(routes: list[BaseRoute], prefix: str = "") -> list[tuple[str, str]]:
    """(method, path template) of every route that takes a method other than GET/HEAD."""
    found = []
    for route in routes:
        if isinstance(route, Mount):
            found += _action_routes(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            for method in sorted((route.methods or set()) - {"GET", "HEAD"}):
                found.append((method, prefix + route.path))
    return found


def _fill(template: str, world: dict[str, Any]) -> list[str]:
    """Concrete paths for a route template: real ids and names, every action."""
    paths = [template]
    values = {
        "id": [str(world["failed"]), str(world["waiting"])],
        "name": ["orders"],
        "action": ["retry", "cancel", "resume", "delete", "pause", "purge"],
    }
    for param, choices in values.items():
        paths = [
            re.sub(r"\{" + param + r"(:\w+)?\}", choice, p) for p in paths for choice in choices
        ]
    return sorted(set(paths))


async def _refused_everywhere(
    world: dict[str, Any],
    client: httpx.AsyncClient,
    statuses: set[int],
    headers: dict[str, str] | None = None,
    skip: frozenset[str] = frozenset(),
) -> int:
    app = client._transport.app  # type: ignore[attr-defined]
    tried = 0
    before = await _state(world["pq"])
    for method, template in _action_routes(app.routes):
        if template in skip:
            continue
        for path in _fill(template, world):
            response = await client.request(
                method, path, headers=headers, json={"data": {"order_id": 1, "email": "x"}}
            )
            assert response.status_code in statuses, (method, path, response.text)
            tried += 1
    assert await _state(world["pq"]) == before
    return tried


async def test_every_action_refuses_an_unauthenticated_request(world: dict[str, Any]) -> None:
    for auth in (BasicAuth(*CREDENTIALS), TokenAuth("t0ken-value"), lambda request: False):
        async with _client(_app(world, auth=auth), auth=None) as client:
            tried = await _refused_everywhere(world, client, {401, 403}, skip=frozenset({"/login"}))
            assert tried >= 12
            assert (await client.get("/api/queues")).status_code == 401
            assert (await client.get("/")).status_code in (401, 303)
    async with _client(_app(world), auth=("admin", "wrong")) as client:
        await _refused_everywhere(world, client, {401}, skip=frozenset({"/login"}))


async def test_read_only_refuses_every_action_and_hides_the_buttons(
    world: dict[str, Any],
) -> None:
    async with _client(_app(world, read_only=True)) as client:
        headers = await _csrf(client)
        await _refused_everywhere(world, client, {403}, headers, skip=frozenset({"/login"}))
        for url in ("/", f"/jobs/{world['failed']}", "/catalogue", "/jobs"):
            page = (await client.get(url)).text
            assert "data-action" not in page and "data-run" not in page, url
            assert "data-bulk-retry" not in page and "read-only" in page


async def test_actions_need_the_csrf_token_and_the_same_origin(world: dict[str, Any]) -> None:
    async with _client(_app(world)) as client:
        headers = await _csrf(client)
        skip = frozenset({"/login"})
        await _refused_everywhere(world, client, {403})  # no token
        await _refused_everywhere(world, client, {403}, {"x-csrf-token": "wrong"}, skip)
        cross = {**headers, "origin": "https://evil.example"}
        await _refused_everywhere(world, client, {403}, cross)
        await _refused_everywhere(world, client, {403}, {**headers, "origin": "null"})
        fetch_site = {**headers, "sec-fetch-site": "cross-site"}
        await _refused_everywhere(world, client, {403}, fetch_site)
        same = {**headers, "origin": BASE, "sec-fetch-site": "same-origin"}
        done = await client.post(f"/api/jobs/{world['failed']}/retry", headers=same)
        assert done.status_code == 200 and done.json()["done"] is True


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


async def test_queue_names_with_slashes_and_odd_bodies(world: dict[str, Any]) -> None:
    pq = world["pq"]
    await pq.create_queue("team/emails")
    await pq.send("team/emails", {"to": "x"})
    async with _client(_app(world)) as client:
        h = await _csrf(client)
        page = await client.get("/")
        assert 'data-action="/api/queues/team/emails/pause"' in page.text
        assert (await client.get("/api/queues/team/emails")).json()["counts"]["created"] == 1
        assert (await client.post("/api/queues/team/emails/pause", headers=h)).is_success
        assert [q.paused for q in await pq.get_queues() if q.name == "team/emails"] == [True]
        before = await _state(pq)
        huge = b'{"data": "' + b"x" * 1_100_000 + b'"}'
        too_big = await client.post(
            "/api/catalogue/plain/run",
            headers={**h, "content-type": "application/json"},
            content=huge,
        )
        assert too_big.status_code == 413
        not_object = await client.post("/api/jobs/retry", headers=h, json=[1, 2])
        assert not_object.status_code == 400
        assert await _state(pq) == before


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


async def test_token_auth_takes_a_bearer_header_or_a_signed_in_cookie(
    world: dict[str, Any],
) -> None:
    app = _app(world, auth=TokenAuth("t0ken-value"))
    async with _client(app, auth=None) as client:
        assert (await client.get("/")).headers["location"] == "/login"
        assert (await client.get("/login")).status_code == 200
        bearer = {"authorization": "Bearer t0ken-value"}
        assert (await client.get("/api/queues", headers=bearer)).status_code == 200
        retried = await client.post(f"/api/jobs/{world['failed']}/retry", headers=bearer)
        assert retried.status_code == 200  # no cookie, so no CSRF token needed
        login_page = await client.get("/login")
        token = re.search(r'name="csrf-token" content="([^"]+)"', login_page.text)
        assert token is not None
        h = {"x-csrf-token": token[1]}
        wrong = await client.post("/login", headers=h, json={"token": "nope-nope"})
        assert wrong.status_code == 401
        signed = await client.post("/login", headers=h, json={"token": "t0ken-value"})
        assert signed.status_code == 200 and client.cookies.get("pgqueue_token")
        assert (await client.get("/")).status_code == 200
        cancel = await client.post(f"/api/jobs/{world['failed']}/cancel")
        assert cancel.status_code == 403  # signed in by cookie: the CSRF token is needed


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


async def test_create_app_needs_auth_or_an_explicit_anonymous(world: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        create_app(world["pq"])  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="allow_anonymous"):
        create_app(world["pq"], auth=None)
    app = create_app(world["pq"], auth=None, allow_anonymous=True)
    async with _client(app, auth=None) as client:
        assert (await client.get("/api/queues")).status_code == 200


async def test_an_async_auth_callable_decides(world: dict[str, Any]) -> None:
    async def only_header(request: Any) -> bool:
        return bool(request.headers.get("x-user") == "ops")

    async with _client(_app(world, auth=only_header), auth=None) as client:
        assert (await client.get("/api/queues")).status_code == 401
        assert (await client.get("/api/queues", headers={"x-user": "ops"})).status_code == 200


def test_basic_auth_compares_the_whole_credential() -> None:
    auth = BasicAuth("admin", "pw")

    class Fake:
        def __init__(self, value: str) -> None:
            self.headers = {"authorization": value}

    def header(text: str) -> str:
        return "Basic " + base64.b64encode(text.encode()).decode()

    assert auth(Fake(header("admin:pw")))  # type: ignore[arg-type]
    for bad in ("admin:p", "admin:pwx", "adm:pw", ":"):
        assert not auth(Fake(header(bad)))  # type: ignore[arg-type]
    assert not auth(Fake("Basic !!!"))  # type: ignore[arg-type]
    assert not auth(Fake("Bearer x"))  # type: ignore[arg-type]


def test_the_command_refuses_to_serve_without_an_auth_choice(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pgqueue.cli import main

    assert main(["dashboard", "tests.acceptance.app:pq"]) == 1
    assert "--token, --basic-auth USER:PASS, or --no-auth" in capsys.readouterr().err
    assert main(["dashboard", "tests.acceptance.app:pq", "--basic-auth", "nopass"]) == 1
    assert "USER:PASS" in capsys.readouterr().err
