"""The app's pgqueue handlers: ``pgqueue.contrib.django`` imports this module when Django
starts, and ``manage.py pgqueue_worker`` runs them."""

from pydantic import BaseModel

from pgqueue.contrib.django import pq

from .models import Order


class Confirm(BaseModel):
    order_id: int


@pq.job("orders.confirm", retry_limit=3, retry_backoff=True)
def confirm_order(data: Confirm) -> str:
    """Mark the order confirmed (stands for sending the confirmation e-mail)."""
    updated = Order.objects.filter(pk=data.order_id).update(confirmed=True)
    return f"confirmed {updated} order(s)"
