"""What the dashboard refuses: unauthenticated requests to every action route, any action
in read-only mode, cross-site requests and missing CSRF tokens, bad ids, filters and
bodies; and that a refusal writes nothing."""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route

from pgqueue import AsyncPgQueue
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
        {"limit": "\u0661\u0662"},  # Arabic-Indic digits: int() reads 12
        {"after": "\u0663"},
        {"limit": "\uff11\uff10"},  # fullwidth digits
        {"limit": " 12"},
        {"limit": "+12"},
        {"limit": "1_0"},
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
        assert 'data-action="/api/queues/team%2Femails/pause"' in page.text
        assert (await client.get("/api/queues/team/emails")).json()["counts"]["created"] == 1
        assert (await client.get("/api/queues/team%2Femails")).json()["name"] == "team/emails"
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
        assert (await client.get("http://localhost/api/queues")).status_code == 200
        assert (await client.get("/api/queues")).status_code == 400  # dash.test: not local


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


async def test_a_bulk_retry_takes_ascii_digits_only(world: dict[str, Any]) -> None:
    async with _client(_app(world)) as client:
        h = await _csrf(client)
        before = await _state(world["pq"])
        for after in ("\u0661", "\u0660", " 0", "0_0"):  # Arabic-Indic 1 and 0
            refused = await client.post("/api/jobs/retry", headers=h, json={"after": after})
            assert refused.status_code == 400, after
        assert await _state(world["pq"]) == before
        page = await client.get("/jobs", params={"limit": "\u0661\u0662"})
        assert page.status_code == 400
        taken = await client.get("/api/jobs", params={"limit": "12", "after": "0"})
        assert taken.status_code == 200


def _actions(html: str, queue: str) -> dict[str, str]:
    """The action URLs of ``queue``'s row on the queues page: {button text: URL}."""
    rows = re.findall(r'<tr data-queue="([^"]*)">(.*?)</tr>', html, re.S)
    (row,) = [body for name, body in rows if name == queue]
    found = re.findall(r'<button[^>]*data-action="([^"]+)"[^>]*>\s*(\w+)</button>', row)
    return {label: url for url, label in found}


async def test_a_queue_named_like_a_path_is_acted_on_by_its_own_buttons(
    world: dict[str, Any],
) -> None:
    """A name holding "/" and ".." is one path segment in every URL the pages build: a
    browser resolving "/api/queues/z/../ok/purge" would purge queue "ok"."""
    pq = world["pq"]
    victim = world["waiting"]
    await pq.cancel(victim)
    sneaky = f"q/../../jobs/{victim}"
    for name in ("ok", "z/../ok", sneaky):
        await pq.create_queue(name)
    kept = await pq.insert([{"name": "ok", "data": {"n": i}} for i in range(3)])
    await pq.insert([{"name": "z/../ok", "data": {"n": i}} for i in range(2)])
    await pq.pause_queue(sneaky)
    async with _client(_app(world)) as client:
        h = await _csrf(client)
        html = (await client.get("/")).text
        for name in ("z/../ok", sneaky):
            actions = _actions(html, name)
            assert set(actions) == {"Purge", "Resume" if name == sneaky else "Pause"}
            for label, url in actions.items():
                # As a browser resolves it: the name stays one segment, dots and all.
                resolved = httpx.URL(BASE).join(url).raw_path.decode()
                assert resolved == url, (name, url)
                head, segment, action = url.rsplit("/", 2)
                assert head == "/api/queues" and action == label.lower()
                assert "/" not in segment and unquote(segment) == name
        assert 'href="/jobs?queue=z%2F..%2Fok"' in html
        listed = await client.get("/jobs?queue=z%2F..%2Fok&state=created")
        assert listed.status_code == 200 and "<td>z/../ok</td>" in listed.text

        def button(name: str, label: str) -> str:
            return str(httpx.URL(BASE).join(_actions(html, name)[label]))

        paused = await client.post(button("z/../ok", "Pause"), headers=h)
        assert paused.status_code == 200 and paused.json()["queue"] == "z/../ok"
        purged = await client.post(button("z/../ok", "Purge"), headers=h)
        assert purged.json() == {"queue": "z/../ok", "action": "purge", "deleted": 2}
        assert await pq.find_jobs("z/../ok") == []
        assert [j.id for j in await pq.find_jobs("ok")] == kept  # untouched
        paused_now = {q.name: q.paused for q in await pq.get_queues()}
        assert paused_now["z/../ok"] and not paused_now["ok"]
        resumed = await client.post(button(sneaky, "Resume"), headers=h)
        assert resumed.json() == {"queue": sneaky, "action": "resume"}
        assert not {q.name: q.paused for q in await pq.get_queues()}[sneaky]
        job = await pq.get_job_by_id(victim)
        assert job is not None and job.state.value == "cancelled"  # not resumed


async def test_a_job_named_like_a_path_runs_from_its_own_form(world: dict[str, Any]) -> None:
    pq: AsyncPgQueue = world["pq"]

    @pq.job("r/../plain")
    async def sneaky(data: Any) -> None:
        return None

    async with _client(_app(world)) as client:
        h = await _csrf(client)
        html = (await client.get("/catalogue")).text
        assert 'data-run="/api/catalogue/r%2F..%2Fplain/run"' in html
        sent = await client.post("/api/catalogue/r%2F..%2Fplain/run", headers=h, json={})
        assert sent.status_code == 200
        job = await pq.get_job_by_id(sent.json()["id"])
        assert job is not None and job.name == "r/../plain"


REBINDING = {"origin": "http://evil.test:8404", "sec-fetch-site": "same-origin"}


async def _pause_from(app: Starlette, base: str, queue: str = "plain") -> tuple[int, int]:
    """As a browser on ``base`` would: open the page, then pause ``queue`` from it."""
    origin = {**REBINDING, "origin": base}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base) as c:
        page = await c.get("/", headers=origin)
        token = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
        headers = {**origin, "x-csrf-token": token[1] if token else "none"}
        action = await c.post(f"/api/queues/{queue}/pause", headers=headers)
        return page.status_code, action.status_code


async def test_an_anonymous_dashboard_answers_only_to_local_host_names(
    world: dict[str, Any],
) -> None:
    """DNS rebinding: a site whose name resolves to 127.0.0.1 is the same origin as the
    dashboard to a browser; the Host header it sends is its own name."""
    pq = world["pq"]
    app = create_app(pq, auth=None, allow_anonymous=True, counts_max_age=0)
    before = await _state(pq)
    assert await _pause_from(app, "http://evil.test:8404") == (400, 400)
    assert await _pause_from(app, "http://evil.test") == (400, 400)
    assert await _state(pq) == before
    for local in ("http://localhost:8404", "http://127.0.0.1:8404", "http://[::1]:8404"):
        assert await _pause_from(app, local) == (200, 200), local
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
        refused = await c.get("/api/queues", headers={"host": "localhost.evil.test"})
        assert refused.status_code == 400 and "Host" in refused.json()["error"]
        assert (await c.get("/static/dashboard.js", headers={"host": "x:1"})).status_code == 400


async def test_allowed_hosts_name_the_hosts_and_a_star_allows_any(world: dict[str, Any]) -> None:
    pq = world["pq"]
    anyone = create_app(pq, auth=None, allow_anonymous=True, allowed_hosts=["*"])
    assert await _pause_from(anyone, "http://evil.test:8404") == (200, 200)
    named = create_app(
        pq, auth=None, allow_anonymous=True, allowed_hosts=["Dash.example", "*.ops.example"]
    )
    assert await _pause_from(named, "http://dash.example:8000", "events") == (200, 200)
    assert await _pause_from(named, "http://a.ops.example", "events") == (200, 200)
    assert await _pause_from(named, "http://localhost:8404") == (400, 400)
    assert await _pause_from(named, "http://ops.example.evil.test") == (400, 400)
    authed = _app(world, allowed_hosts=["dash.example"])
    async with _client(authed) as client:
        assert (await client.get("/api/queues")).status_code == 400  # dash.test
        moved = await client.get("http://dash.example/api/queues")
        assert moved.status_code == 200
    async with _client(_app(world)) as client:  # with auth, any name unless told
        assert (await client.get("http://evil.test/api/queues")).status_code == 200
    with pytest.raises(TypeError):
        create_app(pq, auth=None, allow_anonymous=True, allowed_hosts="localhost")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--no-auth"], ["localhost", "127.0.0.1", "[::1]"]),
        (["--no-auth", "--host", "0.0.0.0"], ["localhost", "127.0.0.1", "[::1]"]),
        (["--no-auth", "--host", "::"], ["localhost", "127.0.0.1", "[::1]"]),
        (["--no-auth", "--host", "10.0.0.5"], ["localhost", "127.0.0.1", "[::1]", "10.0.0.5"]),
        (["--no-auth", "--host", "::1"], ["localhost", "127.0.0.1", "[::1]"]),
        (["--no-auth", "--host", "fd00::5"], ["localhost", "127.0.0.1", "[::1]", "[fd00::5]"]),
        (["--no-auth", "--host", "Box.lan"], ["localhost", "127.0.0.1", "[::1]", "box.lan"]),
        (
            ["--no-auth", "--allowed-host", "a.test", "--allowed-host", "b.test"],
            ["a.test", "b.test"],
        ),
        (["--no-auth", "--allowed-host", "*"], ["*"]),
        (["--basic-auth", "u:p"], None),
        (["--basic-auth", "u:p", "--allowed-host", "a.test"], ["a.test"]),
    ],
)
def test_the_command_chooses_the_allowed_hosts(argv: list[str], expected: list[str] | None) -> None:
    from pgqueue.cli import build_parser
    from pgqueue.dashboard._serve import allowed_hosts_from_args, auth_from_args

    args = build_parser().parse_args(["dashboard", "tests.acceptance.app:pq", *argv])
    anonymous = auth_from_args(args) is None
    assert allowed_hosts_from_args(args, anonymous=anonymous) == expected
