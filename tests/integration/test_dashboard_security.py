"""What the dashboard refuses: unauthenticated requests to every action route, any action
in read-only mode, cross-site requests and missing CSRF tokens, bad ids, filters and
bodies; and that a refusal writes nothing."""

from __future__ import annotations

import base64
import re
from typing import Any

import httpx
import pytest
from starlette.routing import BaseRoute, Mount, Route

from pgqueue.dashboard import BasicAuth, TokenAuth, create_app

from .dashboard_world import BASE, CREDENTIALS
from .dashboard_world import client as _client
from .dashboard_world import csrf as _csrf
from .dashboard_world import make_app as _app
from .dashboard_world import state as _state


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
        {"key": "\x00"},
        {"group": "a\x00b"},
        {"data": '{"a": "\\u0000"}'},
        {"data": "[" * 5000 + "]" * 5000},
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
            tried = await _refused_everywhere(world, client, {401, 403})
            assert tried >= 12
            assert (await client.get("/api/queues")).status_code == 401
            assert (await client.get("/")).status_code in (401, 303)
    async with _client(_app(world), auth=("admin", "wrong")) as client:
        await _refused_everywhere(world, client, {401, 403})


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
        nested = b'{"data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        deep = await client.post(
            "/api/catalogue/plain/run",
            headers={**h, "content-type": "application/json"},
            content=nested,
        )
        assert deep.status_code == 400
        not_object = await client.post("/api/jobs/retry", headers=h, json=[1, 2])
        assert not_object.status_code == 400
        assert await _state(pq) == before


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
