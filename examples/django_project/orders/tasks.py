"""A ``django.tasks`` task, which the pgqueue backend (settings.TASKS) runs on pgqueue's
workers."""

try:
    from django.tasks import TaskContext, task
except ImportError:  # Django before 6.0: the django-tasks backport
    from django_tasks import TaskContext, task  # type: ignore[no-redef,assignment]

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


@task(takes_context=True)
def attempt_number(context: "TaskContext[[str], str]", label: str) -> str:
    """Which attempt this is, as the task's context tells it."""
    return f"{label}: attempt {context.attempt}"


@task
async def shout(text: str) -> str:
    """An async task: the worker runs it to its end on a handler's thread."""
    return text.upper()
