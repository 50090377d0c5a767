"""The shop's jobs, run for real on PostgreSQL without a worker and without sleeping."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from pgqueue import AsyncPgQueue, InvalidPayloadError, JobState
from pgqueue.testing import aadvance, aassert_sent, adrain, eager
from shop.app import Order, charge, payments, place_order, pq


async def test_an_order_is_charged_and_its_receipt_emailed(pgqueue_aqueue: AsyncPgQueue) -> None:
    await place_order.send(Order(id=1, customer="ada@example.com", total=30))

    drained = await adrain(pgqueue_aqueue)

    assert drained.names == ["shop.place_order", "shop.charge", "shop.email"]
    assert drained.outputs("shop.charge") == [{"order": 1, "charge": "ch_1"}]
    assert payments.charged == [(1, 30.0)]
    await aassert_sent(pgqueue_aqueue, "shop.email", {"to": "ada@example.com"}, count=1)


async def test_a_charge_is_retried_with_backoff_while_the_provider_is_down(
    pgqueue_aqueue: AsyncPgQueue,
) -> None:
    payments.up = False
    await charge.send(Order(id=2, customer="grace@example.com", total=12.5))

    first = await adrain(pgqueue_aqueue)
    assert [(r.outcome, r.state) for r in first] == [("failed", JobState.retry)]
    # Backoff with jitter: the first retry comes 30 to 60 s later, the second 60 to 120 s.
    assert len(await aadvance(pgqueue_aqueue, timedelta(seconds=29))) == 0  # not due yet

    second = await aadvance(pgqueue_aqueue, timedelta(seconds=31))
    assert second.retried and second.runs[0].attempt == 2
    assert len(await aadvance(pgqueue_aqueue, timedelta(seconds=59))) == 0

    payments.up = True
    third = await aadvance(pgqueue_aqueue, timedelta(seconds=61))
    assert third.outputs() == [{"order": 2, "charge": "ch_2"}]
    assert payments.charged == [(2, 12.5)]


async def test_the_daily_report_runs_each_morning(pgqueue_aqueue: AsyncPgQueue) -> None:
    await pgqueue_aqueue.set_clock(datetime(2030, 1, 1, 12, tzinfo=timezone.utc))
    await place_order.send(Order(id=3, customer="linus@example.com", total=20))
    await place_order.send(Order(id=4, customer="ada@example.com", total=5))
    await adrain(pgqueue_aqueue)

    day = await aadvance(pgqueue_aqueue, timedelta(days=1))  # past 06:00 on the 2nd

    assert day.outputs("shop.daily_report") == [{"charges": 2, "total": 25.0}]
    assert len(await aadvance(pgqueue_aqueue, timedelta(hours=12))) == 0  # once a day


async def test_each_test_has_a_schema_of_its_own(pgqueue_aqueue: AsyncPgQueue) -> None:
    assert await pgqueue_aqueue.find_jobs(archived=True) == []


async def test_orders_in_eager_mode_need_no_database() -> None:
    with eager(pq) as jobs:
        handle = await place_order.send(Order(id=5, customer="eve@example.com", total=1))
        assert handle is not None and await handle.result() == "accepted"
        assert [j.name for j in jobs.jobs] == ["shop.place_order", "shop.charge", "shop.email"]
        with pytest.raises(InvalidPayloadError):
            await place_order.send({"id": 6, "customer": "eve@example.com", "total": -1})
