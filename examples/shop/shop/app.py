"""The shop's jobs: placing an order charges the customer and emails a receipt; a charge
is retried with backoff while the payment provider is down; a report is sent every
morning at six. ``pq`` is the application's queue object: ``pgqueue worker shop.app:pq``
runs these handlers, and the tests run them with pgqueue's pytest plugin."""

from __future__ import annotations

from pydantic import BaseModel, Field

from pgqueue import AsyncPgQueue, JobState, RunningJob

pq = AsyncPgQueue()


class Order(BaseModel):
    id: int
    customer: str
    total: float = Field(gt=0)


class PaymentProvider:
    """Stands in for a payment service's client (a real one would make HTTP calls)."""

    def __init__(self) -> None:
        self.up = True
        self.charged: list[tuple[int, float]] = []

    def charge(self, order: int, amount: float) -> str:
        if not self.up:
            raise ConnectionError("the payment provider is unavailable")
        self.charged.append((order, amount))
        return f"ch_{order}"


payments = PaymentProvider()


@pq.job("shop.place_order")
async def place_order(order: Order) -> str:
    """Accept an order: charge it, then email the receipt."""
    await charge.send(order)
    await pq.send("shop.email", {"to": order.customer, "subject": f"Order {order.id}"})
    return "accepted"


@pq.job("shop.charge", retry_limit=4, retry_delay=60, retry_backoff=True)
def charge(order: Order) -> dict[str, object]:
    """Charge an order (while the provider is down, retried after about 1, 2, 4 and 8
    minutes: with backoff, each delay is between half and all of that)."""
    return {"order": order.id, "charge": payments.charge(order.id, order.total)}


@pq.job("shop.email")
def email(message: dict[str, str]) -> str:
    """Send an email (here: only say to whom)."""
    return f"sent to {message['to']}"


@pq.cron("0 6 * * *", name="shop.daily_report")
async def daily_report(job: RunningJob) -> dict[str, object]:
    """Every morning at six: how many charges went through, and for how much."""
    done = await pq.find_jobs("shop.charge", state=JobState.completed, archived=True)
    return {"charges": len(done), "total": sum(j.data["total"] for j in done)}
