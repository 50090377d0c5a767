"""The dashboard and the operator's read commands on a real hot standby: every read
statement they use runs there (a standby refuses any write), and the dashboard's actions
go to the primary."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest

from pgqueue.cli import main

from .dashboard_world import client, csrf, make_app, make_world
from .standby import Pair, missing_tools, primary_and_standby

Capture = pytest.CaptureFixture[str]


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    reason = missing_tools()
    if reason is not None:
        pytest.skip(reason)
    with primary_and_standby() as started:
        yield started


@pytest.fixture
async def world(pair: Pair) -> AsyncIterator[dict[str, Any]]:
    """The dashboard tests' world, written on the primary and replayed on the standby."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pair.primary, autocommit=True) as conn:
        async for found in make_world(pair.primary, schema, conn):
            pair.replayed()
            yield {**found, "schema": schema}


async def test_every_dashboard_read_runs_on_the_standby(pair: Pair, world: dict[str, Any]) -> None:
    app = make_app(world, read_dsn=pair.standby)
    failed, waiting, child = world["failed"], world["waiting"], world["child"]
    with psycopg.connect(pair.standby, autocommit=True) as standby:
        # Replay stops: what the primary does from now on, the standby does not show.
        standby.execute("SELECT pg_wal_replay_pause()")
        try:
            await world["pq"].create_queue("only_on_the_primary")
            async with app.router.lifespan_context(app), client(app) as http:
                pages = {
                    "/": ["orders", "events", "concurrency 3"],
                    "/jobs": [f'href="/jobs/{failed}"'],
                    "/jobs?queue=orders&state=failed": [str(failed)],
                    "/jobs?archived=1&data=%7B%22x%22%3A1%7D": [str(world["done"])],
                    f"/jobs/{failed}": ["RuntimeError", "no stock", "Children"],
                    f"/jobs/{child}": ["Parents"],
                    f"/jobs/{waiting}": ["k1"],
                    "/catalogue": ["Ships an order."],
                    "/schedules": ["*/5 * * * *", "five"],
                    "/subscriptions": ["order.placed"],
                    "/api/queues": ['"events"'],
                    "/api/queues/orders": ['"orders"'],
                    "/api/jobs?state=failed": [f'"id": {failed}'],
                    f"/api/jobs/{failed}": ["no stock"],
                    "/api/schedules": ["five"],
                    "/api/subscriptions": ["order.placed"],
                }
                for url, expected in pages.items():
                    page = await http.get(url)
                    assert page.status_code == 200, (url, page.text[:300])
                    for text in expected:
                        assert text in page.text, (url, text)
                    assert "only_on_the_primary" not in page.text, url
                assert (await http.get("/api/queues/only_on_the_primary")).status_code == 404
        finally:
            standby.execute("SELECT pg_wal_replay_resume()")
        pair.replayed()
        async with app.router.lifespan_context(app), client(app) as http:
            assert (await http.get("/api/queues/only_on_the_primary")).status_code == 200


async def test_actions_go_to_the_primary_and_show_once_replayed(
    pair: Pair, world: dict[str, Any]
) -> None:
    app = make_app(world, read_dsn=pair.standby)
    failed = world["failed"]
    async with app.router.lifespan_context(app), client(app) as http:
        headers = await csrf(http)
        done = await http.post(f"/api/jobs/{failed}/retry", headers=headers)
        assert done.status_code == 200, done.text
        job = await world["pq"].get_job_by_id(failed)
        assert job is not None and job.state.value == "retry"
        pair.replayed()
        shown = (await http.get(f"/api/jobs/{failed}")).json()
        assert shown["state"] == "retry"
        paused = await http.post("/api/queues/events/pause", headers=headers)
        assert paused.status_code == 200, paused.text
        pair.replayed()
        queues = {q["name"]: q for q in (await http.get("/api/queues")).json()["queues"]}
        assert queues["events"]["paused"] is True
    # The app's stop closed the replica's connections.
    with psycopg.connect(pair.standby, autocommit=True) as standby:
        left = standby.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
            " AND pid <> pg_backend_pid()"
        ).fetchone()
        assert left == (0,)


def test_read_commands_run_on_the_standby(
    pair: Pair, world: dict[str, Any], capsys: Capture
) -> None:
    target = ["--dsn", pair.standby, "--schema", world["schema"]]
    for argv in (
        ["queues"],
        ["queues", "--json"],
        ["schedules"],
        ["subscriptions"],
        ["jobs", "list", "--state", "failed"],
        ["job", str(world["failed"])],
    ):
        assert main([*argv, *target]) == 0, argv
        out = capsys.readouterr().out
        assert out.strip(), argv
    assert main(["groups", "plain", *target]) == 1  # read, and found none
    assert capsys.readouterr().err == "pgqueue: queue plain has no groups\n"
    assert main(["pause", "events", *target]) == 1  # a write: the standby refuses it
    assert "read-only transaction" in capsys.readouterr().err
