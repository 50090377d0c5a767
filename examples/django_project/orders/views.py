"""``POST /orders/`` saves an order and sends its confirmation job in one transaction;
``GET /orders/<id>/`` shows it and its job."""

import json

from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from pgqueue.contrib.django import pq

from .jobs import Confirm, confirm_order
from .models import Order


@csrf_exempt
@require_POST
def create_order(request: HttpRequest) -> HttpResponse:
    body = json.loads(request.body or b"{}")
    with transaction.atomic():
        order = Order.objects.create(email=body["email"], total_cents=body["total_cents"])
        # On Django's connection, in this transaction: no job if the order is rolled back.
        handle = confirm_order.send(Confirm(order_id=order.pk), singleton_key=str(order.pk))
        if body.get("fail"):  # stands for anything failing after the send
            raise ValueError("refused after sending")
    job = None if handle is None else int(handle)
    return JsonResponse({"order": order.pk, "job": job}, status=201)


@require_GET
def order_status(request: HttpRequest, order_id: int) -> HttpResponse:
    order = Order.objects.filter(pk=order_id).first()
    if order is None:
        return JsonResponse({"error": "no such order"}, status=404)
    jobs = pq.find_jobs("orders.confirm", key=str(order.pk), archived=True)
    return JsonResponse(
        {
            "order": order.pk,
            "confirmed": order.confirmed,
            "jobs": [{"id": j.id, "state": j.state.value, "output": j.output} for j in jobs],
        }
    )
