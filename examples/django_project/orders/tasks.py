"""A ``django.tasks`` task, which the pgqueue backend (settings.TASKS) runs on pgqueue's
workers."""

try:
    from django.tasks import task
except ImportError:  # Django before 6.0: the django-tasks backport
    from django_tasks import task  # type: ignore[no-redef]

from .models import Order


@task(priority=10)
def add_note(order_id: int, note: str) -> dict[str, object]:
    """Append ``note`` to the order's notes; what the notes are now."""
    order = Order.objects.get(pk=order_id)
    order.note = f"{order.note}{note}\n"
    order.save(update_fields=["note"])
    return {"order": order_id, "notes": order.note.splitlines()}


@task(queue_name="slow")
def refuse(reason: str) -> None:
    """Always fails: its result carries the error."""
    raise PermissionError(reason)
