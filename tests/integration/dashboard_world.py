"""The world the dashboard's tests share: a queue object with registered jobs and one job
in most states, a client of its dashboard, and a snapshot of everything an action could
change."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
from psycopg import sql
from pydantic import BaseModel
from starlette.applications import Starlette

import pgqueue
from pgqueue.dashboard import BasicAuth, create_app

CREDENTIALS = ("admin", "s3cret")
BASE = "http://dash.test"


class Order(BaseModel):
    order_id: int
    email: str


def register(pq: pgqueue.AsyncPgQueue) -> None:
    @pq.job("orders", description="Ships an order.", retry_limit=0)
    async def ship(data: Order) -> dict[str, int]:
        return {"shipped": data.order_id}

    @pq.job("plain")
    async def plain(data: Any) -> None:
        return None


async def make_world(
    dsn: str, schema: str, conn: psycopg.Connection[Any]
) -> AsyncIterator[dict[str, Any]]:
    """A queue object with registered jobs, and one job in most states."""
    async with pgqueue.AsyncPgQueue(dsn, schema=schema, maintenance=False) as pq:
        register(pq)
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


def client(app: Starlette, auth: tuple[str, str] | None = CREDENTIALS) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE, auth=auth)


async def csrf(client: httpx.AsyncClient) -> dict[str, str]:
    """Open a page (which sets the CSRF cookie) and return the header actions send."""
    page = await client.get("/")
    assert page.status_code == 200
    match = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert match is not None and client.cookies.get("pgqueue_csrf") == match[1]
    return {"x-csrf-token": match[1]}


async def state(pq: pgqueue.AsyncPgQueue) -> tuple[Any, ...]:
    """Everything an action could change: every job, every queue."""
    jobs = await pq.find_jobs(limit=10_000, archived=True)
    queues = await pq.get_queues()
    return (
        [(j.id, j.state, j.attempt, j.retry_count) for j in jobs],
        [(q.name, q.paused) for q in queues],
    )


def make_app(world: dict[str, Any], **options: Any) -> Starlette:
    options.setdefault("auth", BasicAuth(*CREDENTIALS))
    options.setdefault("counts_max_age", 0)
    return create_app(world["pq"], **options)
